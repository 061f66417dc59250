/** A grpc-js server on a free local port, without TLS, for tests. */
import { Server, ServerCredentials } from '@grpc/grpc-js';

/** Binds `server` to 127.0.0.1 on a free port; resolves to the port. */
export function bindLocal(server: Server): Promise<number> {
  return new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
}
