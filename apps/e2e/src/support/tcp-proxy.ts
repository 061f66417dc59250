/** A TCP proxy the test controls: `cut()` drops every connection and refuses new ones, `restore()` resumes. */
import { createConnection, createServer, Server, Socket } from 'node:net';

export interface TcpProxy {
  readonly port: number;
  cut(): Promise<void>;
  restore(): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpProxy(targetPort: number, port: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  let server: Server | null = null;
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const srv = createServer((client) => {
        const upstream = createConnection(targetPort, targetHost);
        for (const s of [client, upstream]) {
          sockets.add(s);
          s.on('close', () => sockets.delete(s));
          s.on('error', () => undefined);
        }
        client.pipe(upstream).pipe(client);
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
      });
      srv.once('error', reject);
      srv.listen(port, '127.0.0.1', () => {
        server = srv;
        resolve();
      });
    });
  const stop = () =>
    new Promise<void>((resolve) => {
      const srv = server;
      server = null;
      for (const s of sockets) s.destroy();
      if (srv === null) return resolve();
      srv.close(() => resolve());
    });
  await listen();
  return { port, cut: stop, restore: listen, close: stop };
}
