/** Promise wrappers over the generated grpc-js clients, for tests. */
import { credentials, Metadata, ServiceError } from '@grpc/grpc-js';
import { inference, worker } from '@inlaid/proto';

export function inferenceClient(addr: string): inference.InferenceClient {
  return new inference.InferenceClient(addr, credentials.createInsecure());
}

export function workerClient(addr: string): worker.WorkerClient {
  return new worker.WorkerClient(addr, credentials.createInsecure());
}

export function listModels(client: inference.InferenceClient, md = new Metadata()): Promise<inference.ListModelsResponse> {
  return new Promise((resolve, reject) => client.listModels({}, md, (err, res) => (err ? reject(err) : resolve(res))));
}

export function getInfo(client: worker.WorkerClient): Promise<worker.WorkerInfo> {
  return new Promise((resolve, reject) =>
    client.getInfo({}, new Metadata(), { deadline: Date.now() + 2000 }, (err, res) => (err ? reject(err) : resolve(res))),
  );
}

/** Collects a server stream; rejects with the ServiceError if the call fails. */
export function generate(
  client: inference.InferenceClient,
  req: Partial<inference.GenerateRequest>,
  md = new Metadata(),
): Promise<inference.GenerateResponse[]> {
  const full: inference.GenerateRequest = { model: '', prompt: '', messages: [], requestId: '', ...req };
  return new Promise((resolve, reject) => {
    const out: inference.GenerateResponse[] = [];
    const call = client.generate(full, md);
    call.on('data', (m: inference.GenerateResponse) => out.push(m));
    call.on('error', (err: ServiceError) => reject(err));
    call.on('end', () => resolve(out));
  });
}

/** The adapters the worker at `addr` itself serves (asked directly, not through a gateway), sorted. */
export async function servedAdapters(addr: string): Promise<string[]> {
  const c = workerClient(addr);
  try {
    return (await getInfo(c)).models.filter((m) => m.parent !== '').map((m) => m.id).sort();
  } finally {
    c.close();
  }
}
