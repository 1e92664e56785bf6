// A Spring Web MVC app on embedded Jetty 9 for initless: the Spring context is refreshed and Jetty is
// listening before the ready phrase is printed (see examples/README.md, "Frameworks").
import java.util.concurrent.atomic.AtomicLong;
import javax.servlet.http.HttpServletResponse;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;
import org.eclipse.jetty.util.thread.QueuedThreadPool;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.PathVariable;
import org.springframework.web.bind.annotation.RequestParam;
import org.springframework.web.bind.annotation.RestController;
import org.springframework.web.context.support.AnnotationConfigWebApplicationContext;
import org.springframework.web.servlet.DispatcherServlet;
import org.springframework.web.servlet.mvc.method.annotation.RequestMappingHandlerAdapter;
import org.springframework.web.servlet.mvc.method.annotation.RequestMappingHandlerMapping;

public final class SpringJettyApp {
    static final String READY = "spring-jetty: ready";

    /** A singleton bean holding the state that must continue across a restore. */
    public static final class RequestCounter {
        private final AtomicLong count = new AtomicLong();

        long next() {
            return count.incrementAndGet();
        }

        long current() {
            return count.get();
        }
    }

    @RestController
    public static class HelloController {
        private final RequestCounter counter;

        public HelloController(RequestCounter counter) {
            this.counter = counter;
        }

        @GetMapping(value = "/", produces = "text/plain; charset=utf-8")
        public String hello(HttpServletResponse response) {
            // Connection: close, so no keep-alive connection is open when a snapshot is taken.
            response.setHeader("Connection", "close");
            return "hello from spring on jetty requests=" + counter.next() + "\n";
        }

        @GetMapping(value = "/items/{id}", produces = "text/plain; charset=utf-8")
        public String item(@PathVariable("id") long id, @RequestParam(value = "q", defaultValue = "") String q,
                           HttpServletResponse response) {
            response.setHeader("Connection", "close");
            return "item_id=" + id + " q=" + q + " requests=" + counter.current() + "\n";
        }
    }

    public static void main(String[] args) throws Exception {
        String portEnv = System.getenv("PORT");
        int port = portEnv == null || portEnv.isEmpty() ? 9000 : Integer.parseInt(portEnv);

        AnnotationConfigWebApplicationContext spring = new AnnotationConfigWebApplicationContext();
        // Plain annotated classes, no @Configuration: Spring 4.3 enhances @Configuration classes with its
        // bundled CGLIB, whose class writer rejects Java 17. Without @EnableWebMvc, DispatcherServlet
        // would fall back to the legacy annotation mapping, which ignores @GetMapping: the mapping and
        // adapter @EnableWebMvc would add are registered as plain beans instead.
        spring.register(RequestMappingHandlerMapping.class, RequestMappingHandlerAdapter.class, RequestCounter.class,
                        HelloController.class);

        // A small pool (Jetty's default is 8 to 200 threads): fewer threads to snapshot and restore.
        QueuedThreadPool pool = new QueuedThreadPool(8, 4);
        pool.setName("jetty");
        Server server = new Server(pool);
        ServerConnector connector = new ServerConnector(server, 1, 1);
        connector.setHost("0.0.0.0");
        connector.setPort(port);
        server.addConnector(connector);

        ServletContextHandler context = new ServletContextHandler(ServletContextHandler.NO_SESSIONS);
        ServletHolder dispatcher = new ServletHolder("dispatcher", new DispatcherServlet(spring));
        dispatcher.setInitOrder(0);  // refresh the Spring context at start, not on the first request
        context.addServlet(dispatcher, "/*");
        server.setHandler(context);
        server.start();

        System.out.println(READY);
        System.out.flush();
        server.join();
    }
}
