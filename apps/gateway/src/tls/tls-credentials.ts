/**
 * Reads the PEM files named in the config once at start-up and builds the TLS material: HTTPS options and
 * gRPC server credentials for the client endpoints, and mTLS channel credentials for the worker link.
 * Key material stays in memory; only file paths ever appear in errors.
 */
import { readFileSync } from 'node:fs';
import { ChannelCredentials, credentials, ServerCredentials } from '@grpc/grpc-js';
import { type TlsFiles, WORKER_TLS_ENV, type WorkerTlsFiles } from '@inlaid/config';

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(`cannot read the ${what} at ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { cause: err });
  }
}

export interface ServerTls {
  readonly https: { cert: Buffer; key: Buffer };
  readonly grpc: ServerCredentials;
}

export function serverTls(files: TlsFiles | null): ServerTls | null {
  if (files === null) return null;
  const cert = readPem(files.certPath, 'TLS certificate (INLAID_TLS_CERT)');
  const key = readPem(files.keyPath, 'TLS key (INLAID_TLS_KEY)');
  return { https: { cert, key }, grpc: ServerCredentials.createSsl(null, [{ cert_chain: cert, private_key: key }], false) };
}

export function grpcServerCredentials(files: TlsFiles | null): ServerCredentials {
  return serverTls(files)?.grpc ?? ServerCredentials.createInsecure();
}

/** Credentials for the gateway->worker channels: TLS verified against the CA, plus a client cert for mTLS. */
export function workerChannelCredentials(files: WorkerTlsFiles | null): ChannelCredentials {
  if (files === null) return credentials.createInsecure();
  const ca = readPem(files.caPath, `worker CA (${WORKER_TLS_ENV.ca})`);
  const key = files.keyPath === null ? null : readPem(files.keyPath, `worker-link client key (${WORKER_TLS_ENV.key})`);
  const cert = files.certPath === null ? null : readPem(files.certPath, `worker-link client certificate (${WORKER_TLS_ENV.cert})`);
  return credentials.createSsl(ca, key, cert);
}
