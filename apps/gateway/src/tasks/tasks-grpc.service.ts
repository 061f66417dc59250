/** Serves inlaid.v1.Tasks on the client gRPC port: the same operations as the HTTP task API. */
import { Metadata, sendUnaryData, ServerUnaryCall } from '@grpc/grpc-js';
import { Inject, Injectable, OnModuleInit } from '@nestjs/common';
import { tasks } from '@inlaid/proto';
import { CallGate } from '../auth/call-gate.service';
import { GrpcServerService } from '../grpc-api/grpc-server.service';
import { toServiceError } from '../grpc-api/inference-handlers';
import { checkDecoded, withMalformedMarker } from '../grpc-api/malformed';
import { TasksService } from './tasks.service';
import type { TaskViewJson } from './task-view';

function view(v: TaskViewJson): tasks.TaskView {
  return { name: v.name, status: v.status, json: JSON.stringify(v) };
}

/**
 * The REST body's `slo` from the proto's: 0 is proto3's unset, left out; any other value (negative, NaN, infinite)
 * goes to task-input.ts parseSlo, which refuses it naming `slo.ttft_ms` / `slo.tpot_ms`, as REST's 400 does.
 */
export function sloBody(slo: tasks.Slo): { ttft_ms?: number; tpot_ms?: number } {
  return { ...(slo.ttftMs !== 0 ? { ttft_ms: slo.ttftMs } : {}), ...(slo.tpotMs !== 0 ? { tpot_ms: slo.tpotMs } : {}) };
}

function bearerOf(md: Metadata): string | undefined {
  const v = md.get('authorization')[0];
  return v === undefined ? undefined : String(v);
}

@Injectable()
export class TasksGrpcService implements OnModuleInit {
  constructor(
    @Inject(GrpcServerService) private readonly server: GrpcServerService,
    @Inject(TasksService) private readonly tasks: TasksService,
    @Inject(CallGate) private readonly gate: CallGate,
  ) {}

  onModuleInit(): void {
    this.server.addService(withMalformedMarker(tasks.TasksService), this.handlers());
  }

  private unary<Req, Res>(fn: (req: Req) => Promise<Res>) {
    return (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => {
      void (async () => {
        checkDecoded(call.request); // truncated bytes: INVALID_ARGUMENT, as on Inference
        const release = await this.gate.admit(bearerOf(call.metadata), 'tasks:admin');
        try {
          cb(null, await fn(call.request));
        } finally {
          release();
        }
      })().catch((err: unknown) => cb(toServiceError(err)));
    };
  }

  private handlers(): tasks.TasksServer {
    const t = this.tasks;
    return {
      createTask: this.unary(async (r: tasks.CreateTaskRequest) => {
        const body = {
          name: r.name,
          adapter: { path: r.adapterPath },
          calibration: r.calibrationFile !== '' ? { file_id: r.calibrationFile } : r.calibrationJsonl,
          ...(r.slo !== undefined ? { slo: sloBody(r.slo) } : {}),
          wait_for_quantization: r.waitForQuantization,
        };
        const out = await t.create(body);
        return { jobId: out.job_id, task: view(out.task) };
      }),
      listTasks: this.unary(async () => ({ tasks: (await t.list()).data.map(view) })),
      getTask: this.unary(async (r: tasks.GetTaskRequest) => view(await t.get(r.name))),
      deleteTask: this.unary(async (r: tasks.GetTaskRequest) => view(await t.delete(r.name))),
      loadLoraAdapter: this.unary(async (r: tasks.LoadLoraAdapterRequest) => {
        return (await t.loadLora({ lora_name: r.loraName, lora_path: r.loraPath })).card;
      }),
      unloadLoraAdapter: this.unary(async (r: tasks.UnloadLoraAdapterRequest) => {
        await t.unloadLora({ lora_name: r.loraName });
        return {};
      }),
    };
  }
}
