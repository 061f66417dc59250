/** Promise wrappers over the generated inlaid.v1.Tasks client, for tests. */
import { credentials, Metadata, ServiceError, status } from '@grpc/grpc-js';
import { common, tasks } from '@inlaid/proto';

type Callback<Res> = (err: ServiceError | null, res: Res) => void;
type Unary<Req, Res> = (req: Req, md: Metadata, cb: Callback<Res>) => unknown;

function call<Req, Res>(fn: Unary<Req, Res>, req: Req): Promise<Res> {
  return new Promise((resolve, reject) => fn(req, new Metadata(), (err, res) => (err ? reject(err) : resolve(res))));
}

export type CreateTask = Partial<tasks.CreateTaskRequest> & { name: string };

/** Every Tasks RPC as a promise (rejects with the ServiceError). */
export class TasksApi {
  readonly client: tasks.TasksClient;

  constructor(addr: string) {
    this.client = new tasks.TasksClient(addr, credentials.createInsecure());
  }

  create(req: CreateTask): Promise<tasks.CreateTaskResponse> {
    const full: tasks.CreateTaskRequest = { adapterPath: '', calibrationJsonl: '', calibrationFile: '', slo: undefined, waitForQuantization: false, ...req };
    return call((r: tasks.CreateTaskRequest, md, cb: Callback<tasks.CreateTaskResponse>) => this.client.createTask(r, md, cb), full);
  }

  list(): Promise<tasks.ListTasksResponse> {
    return call((r: tasks.ListTasksRequest, md, cb: Callback<tasks.ListTasksResponse>) => this.client.listTasks(r, md, cb), {});
  }

  get(name: string): Promise<tasks.TaskView> {
    return call((r: tasks.GetTaskRequest, md, cb: Callback<tasks.TaskView>) => this.client.getTask(r, md, cb), { name });
  }

  delete(name: string): Promise<tasks.TaskView> {
    return call((r: tasks.GetTaskRequest, md, cb: Callback<tasks.TaskView>) => this.client.deleteTask(r, md, cb), { name });
  }

  loadLora(loraName: string, loraPath: string): Promise<common.ModelCard> {
    return call((r: tasks.LoadLoraAdapterRequest, md, cb: Callback<common.ModelCard>) => this.client.loadLoraAdapter(r, md, cb), { loraName, loraPath });
  }

  unloadLora(loraName: string): Promise<tasks.UnloadLoraAdapterResponse> {
    return call((r: tasks.UnloadLoraAdapterRequest, md, cb: Callback<tasks.UnloadLoraAdapterResponse>) => this.client.unloadLoraAdapter(r, md, cb), { loraName });
  }

  close(): void {
    this.client.close();
  }
}

/** The ServiceError of a call that must fail (throws if it succeeds). */
export async function errorOf(p: Promise<unknown>): Promise<ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error('expected the call to fail');
}

/** The status name of a failed call: 'INVALID_ARGUMENT', 'NOT_FOUND', ... */
export async function codeOf(p: Promise<unknown>): Promise<string> {
  return codeName((await errorOf(p)).code);
}

export const codeName = (code: number | undefined): string => (code === undefined ? 'none' : (status[code] ?? String(code)));

/** The `json` field of a TaskView, parsed (the HTTP view of the task). */
export function viewJson(v: tasks.TaskView): any {
  return JSON.parse(v.json);
}
