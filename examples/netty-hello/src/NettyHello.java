// An HTTP server on Netty 4.1 (NIO transport) for initless: bind, then print the ready phrase (see
// examples/README.md, "Frameworks").
import io.netty.bootstrap.ServerBootstrap;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.SimpleChannelInboundHandler;
import io.netty.channel.nio.NioEventLoopGroup;
import io.netty.channel.socket.SocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.handler.codec.http.DefaultFullHttpResponse;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpHeaderValues;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpObjectAggregator;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpServerCodec;
import io.netty.handler.codec.http.HttpVersion;
import io.netty.handler.codec.http.QueryStringDecoder;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

public final class NettyHello {
    static final String READY = "netty-hello: ready";
    static final AtomicLong requests = new AtomicLong();

    static final class HelloHandler extends SimpleChannelInboundHandler<FullHttpRequest> {
        @Override
        protected void channelRead0(ChannelHandlerContext ctx, FullHttpRequest req) {
            QueryStringDecoder uri = new QueryStringDecoder(req.uri());
            HttpResponseStatus status = HttpResponseStatus.OK;
            String body;
            if (req.method() != HttpMethod.GET) {
                status = HttpResponseStatus.METHOD_NOT_ALLOWED;
                body = "GET only\n";
            } else if (uri.path().equals("/")) {
                body = "hello from netty requests=" + requests.incrementAndGet() + "\n";
            } else if (uri.path().startsWith("/items/")) {
                List<String> q = uri.parameters().get("q");
                body = "item_id=" + uri.path().substring("/items/".length()) + " q=" + (q == null ? "" : q.get(0))
                       + " requests=" + requests.get() + "\n";
            } else {
                status = HttpResponseStatus.NOT_FOUND;
                body = "not found\n";
            }
            ByteBuf content = Unpooled.copiedBuffer(body, StandardCharsets.UTF_8);
            FullHttpResponse res = new DefaultFullHttpResponse(HttpVersion.HTTP_1_1, status, content);
            res.headers().set(HttpHeaderNames.CONTENT_TYPE, "text/plain; charset=utf-8");
            res.headers().setInt(HttpHeaderNames.CONTENT_LENGTH, content.readableBytes());
            // Connection: close and close after the write, so no connection is open at a snapshot.
            res.headers().set(HttpHeaderNames.CONNECTION, HttpHeaderValues.CLOSE);
            ctx.writeAndFlush(res).addListener(ChannelFutureListener.CLOSE);
        }
    }

    public static void main(String[] args) throws InterruptedException {
        String portEnv = System.getenv("PORT");
        int port = portEnv == null || portEnv.isEmpty() ? 9000 : Integer.parseInt(portEnv);
        // One event loop accepts, one serves (Netty's default is 2 per core for each): few threads.
        EventLoopGroup boss = new NioEventLoopGroup(1);
        EventLoopGroup workers = new NioEventLoopGroup(1);
        ServerBootstrap bootstrap = new ServerBootstrap()
            .group(boss, workers)
            .channel(NioServerSocketChannel.class)
            .childHandler(new ChannelInitializer<SocketChannel>() {
                @Override
                protected void initChannel(SocketChannel ch) {
                    ch.pipeline().addLast(new HttpServerCodec(), new HttpObjectAggregator(64 * 1024),
                                          new HelloHandler());
                }
            });
        Channel server = bootstrap.bind("0.0.0.0", port).sync().channel();
        System.out.println(READY);
        System.out.flush();
        server.closeFuture().sync();
    }
}
