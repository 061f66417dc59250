/** Gateway entry point: `node apps/gateway/dist/main.js`. The only place that reads process.env. */
import { Logger } from '@nestjs/common';
import { parseConfig } from '@inlaid/config';
import { startGateway } from './bootstrap';

async function main(): Promise<void> {
  const config = parseConfig(process.env);
  const gateway = await startGateway(config);
  Logger.log(`OpenAI API on ${gateway.httpUrl}, gRPC API on ${gateway.grpcAddr}`, 'Gateway');
}

main().catch((err: unknown) => {
   
  console.error(err instanceof Error ? err.stack ?? err.message : err);
  process.exit(1);
});
