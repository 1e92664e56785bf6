# Accepts connections and reads their requests, but never answers one.
import socket

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", 9000))
listener.listen(16)
print("silent-warmup: ready", flush=True)
held = []
while True:
    conn, _ = listener.accept()
    conn.recv(65536)
    held.append(conn)
