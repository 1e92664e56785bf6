// Java "hello world" for initless on the JDK's built-in HTTP server: bind, then print the ready phrase
// (see examples/README.md).
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicLong;

public final class Hello {
    static final String READY = "java-hello: ready";
    static final AtomicLong requests = new AtomicLong();

    static void handle(HttpExchange ex) throws IOException {
        long n = requests.incrementAndGet();
        boolean ok = ex.getRequestMethod().equals("GET") && ex.getRequestURI().getPath().equals("/");
        byte[] body = (ok ? "hello from java " + Runtime.version().feature() + " requests=" + n + "\n"
                          : "not found\n").getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
        // Connection: close, so no keep-alive connection is still open when a snapshot is taken.
        ex.getResponseHeaders().set("Connection", "close");
        ex.sendResponseHeaders(ok ? 200 : 404, body.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(body);
        }
        ex.close();
    }

    public static void main(String[] args) throws IOException {
        String portEnv = System.getenv("PORT");
        int port = portEnv == null || portEnv.isEmpty() ? 9000 : Integer.parseInt(portEnv);
        HttpServer server = HttpServer.create(new InetSocketAddress(port), 0);
        server.createContext("/", Hello::handle);
        // No executor: requests run on the server's dispatcher thread, one thread fewer to restore.
        server.setExecutor(null);
        server.start();
        System.out.println(READY);
        System.out.flush();
    }
}
