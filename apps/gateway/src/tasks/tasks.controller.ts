/**
 * HTTP: POST/GET/DELETE /v1/tasks, POST /v1/files (calibration uploads), vLLM's load/unload_lora_adapter.
 * Upload limits (INLAID_MAX_UPLOAD_BYTES) come from the multer module options of tasks.module.ts.
 */
import { Body, Controller, Delete, Get, HttpCode, Inject, Param, Post, Req, Res, UploadedFile as File, UploadedFiles as Files, UseInterceptors } from '@nestjs/common';
import { FileFieldsInterceptor, FileInterceptor } from '@nestjs/platform-express';
import type { Request, Response } from 'express';
import { TasksService } from './tasks.service';
import { UploadTooLargeInterceptor } from './upload-limits';
import type { UploadedFile, UploadedFiles } from './uploads';

const TASK_FILES = [{ name: 'adapter_config', maxCount: 1 }, { name: 'adapter_model', maxCount: 1 }, { name: 'calibration_file', maxCount: 1 }];

/** Multipart fields arrive as strings; `adapter` and `slo` may be JSON. */
function multipartBody(req: Request): unknown {
  const body = { ...(req.body as Record<string, unknown>) };
  if (!(req.headers['content-type'] ?? '').startsWith('multipart/')) return req.body;
  for (const key of ['adapter', 'slo', 'calibration']) {
    const v = body[key];
    if (typeof v === 'string' && v.trim().startsWith('{')) {
      try {
        body[key] = JSON.parse(v);
      } catch {
        /* left as text; validation names the field */
      }
    }
  }
  return body;
}

@Controller('v1')
export class TasksController {
  constructor(@Inject(TasksService) private readonly tasks: TasksService) {}

  @Post('tasks')
  @HttpCode(202)
  @UseInterceptors(UploadTooLargeInterceptor, FileFieldsInterceptor(TASK_FILES))
  create(@Req() req: Request, @Files() files: UploadedFiles | undefined) {
    return this.tasks.create(multipartBody(req), files ?? {});
  }

  @Get('tasks')
  list() {
    return this.tasks.list();
  }

  @Get('tasks/:name')
  get(@Param('name') name: string) {
    return this.tasks.get(name);
  }

  @Delete('tasks/:name')
  delete(@Param('name') name: string) {
    return this.tasks.delete(name);
  }

  @Post('files')
  @HttpCode(200)
  @UseInterceptors(UploadTooLargeInterceptor, FileInterceptor('file'))
  upload(@File() file: UploadedFile | undefined) {
    return this.tasks.uploadFile(file);
  }

  @Post('load_lora_adapter')
  async load(@Body() body: unknown, @Res() res: Response) {
    res.status(200).type('text/plain').send((await this.tasks.loadLora(body)).message);
  }

  @Post('unload_lora_adapter')
  async unload(@Body() body: unknown, @Res() res: Response) {
    res.status(200).type('text/plain').send(await this.tasks.unloadLora(body));
  }
}
