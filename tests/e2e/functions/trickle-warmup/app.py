# Answers a request with a head declaring a large body, then sends it a byte every 200 ms.
import socket
import threading
import time


def trickle(conn):
    conn.recv(65536)
    try:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        while True:
            conn.sendall(b"t")
            time.sleep(0.2)
    except OSError:
        conn.close()


listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", 9000))
listener.listen(16)
print("trickle-warmup: ready", flush=True)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=trickle, args=(conn,), daemon=True).start()
