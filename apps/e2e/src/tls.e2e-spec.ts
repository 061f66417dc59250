/**
 * TLS on the client endpoints (INLAID_TLS_CERT/KEY) and mTLS on the gateway->worker link
 * (INLAID_GATEWAY_TLS_CA/CERT/KEY; worker --tls-cert/--tls-key/--tls-client-ca), with openssl-made certs.
 */
import { credentials, Metadata, status } from '@grpc/grpc-js';
import { inference } from '@inlaid/proto';
import { rmSync } from 'node:fs';
import { request } from 'node:https';
import { makeTestPki, TestPki } from './support/certs';
import { Harness, startHarness, waitFor } from './support/gateway-harness';
import { generate, getInfo, listModels } from './support/grpc-clients';
import { freePort } from './support/ports';
import { makeTinyFixture, startWorker, TinyFixture, WorkerProcess } from './support/python-worker';
import { worker as workerProto } from '@inlaid/proto';

jest.setTimeout(240_000);

let pki: TestPki;
let fixture: TinyFixture;
let worker: WorkerProcess;
let h: Harness;

function httpsJson(url: string, ca: Buffer | null, body?: unknown): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: body === undefined ? 'GET' : 'POST', ca: ca ?? undefined, headers: { 'content-type': 'application/json' } }, (res) => {
      let data = '';
      res.on('data', (c: Buffer) => (data += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(data) }));
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

beforeAll(async () => {
  pki = makeTestPki();
  fixture = await makeTinyFixture();
  worker = await startWorker(fixture, await freePort(), 120_000, ['--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--tls-client-ca', pki.caCert]);
  h = await startHarness({
    WORKER_ADDRS: worker.addr,
    INLAID_TLS_CERT: pki.serverCert,
    INLAID_TLS_KEY: pki.serverKey,
    INLAID_GATEWAY_TLS_CA: pki.caCert,
    INLAID_GATEWAY_TLS_CERT: pki.clientCert,
    INLAID_GATEWAY_TLS_KEY: pki.clientKey,
  });
});

afterAll(async () => {
  await worker?.kill();
  await h?.close();
  if (fixture !== undefined) rmSync(fixture.root, { recursive: true, force: true });
  if (pki !== undefined) rmSync(pki.dir, { recursive: true, force: true });
});

it('serves HTTPS and reaches the worker over mTLS', async () => {
  expect(h.gateway.httpUrl.startsWith('https://')).toBe(true);
  const ca = pki.read(pki.caCert);
  const ready = await waitFor(async () => {
    const r = await httpsJson(`${h.gateway.httpUrl}/readyz`, ca);
    return r.status === 200 ? r : undefined;
  }, 10_000, 'ready over mTLS');
  expect(ready.status).toBe(200);
  const r = await httpsJson(`${h.gateway.httpUrl}/v1/completions`, ca, { model: 'sql', prompt: 'hi', max_tokens: 3, temperature: 0 });
  expect(r.status).toBe(200);
  await expect(httpsJson(`${h.gateway.httpUrl}/healthz`, null)).rejects.toThrow(/self.signed|unable to verify|certificate/i);
  await expect(fetch(h.gateway.httpUrl.replace('https:', 'http:') + '/healthz')).rejects.toThrow();
});

it('serves the client gRPC API over TLS only', async () => {
  const tls = new inference.InferenceClient(h.gateway.grpcAddr, credentials.createSsl(pki.read(pki.caCert)));
  const out = await generate(tls, { model: 'poet', prompt: 'hi', sampling: { maxTokens: 3, stop: [], stopTokenIds: [], ignoreEos: true } });
  expect(out.reduce((n, m) => n + m.tokenIds.length, 0)).toBe(3);
  tls.close();
  const plain = new inference.InferenceClient(h.gateway.grpcAddr, credentials.createInsecure());
  await expect(listModels(plain, new Metadata())).rejects.toMatchObject({ code: status.UNAVAILABLE });
  plain.close();
});

it('the worker refuses clients without a certificate from the trusted CA', async () => {
  const ca = pki.read(pki.caCert);
  const noCert = new workerProto.WorkerClient(worker.addr, credentials.createSsl(ca));
  const rogue = new workerProto.WorkerClient(worker.addr, credentials.createSsl(ca, pki.read(pki.rogueKey), pki.read(pki.rogueCert)));
  const plain = new workerProto.WorkerClient(worker.addr, credentials.createInsecure());
  for (const c of [noCert, rogue, plain]) {
    await expect(getInfo(c)).rejects.toMatchObject({ code: status.UNAVAILABLE });
    c.close();
  }
  const good = new workerProto.WorkerClient(worker.addr, credentials.createSsl(ca, pki.read(pki.clientKey), pki.read(pki.clientCert)));
  expect((await getInfo(good)).models.length).toBeGreaterThan(0);
  good.close();
});
