import { MiddlewareConsumer, Module, NestModule } from '@nestjs/common';
import { RecordsModule } from '../records/records.module';
import { requestIdMiddleware } from './request-context';
import { RequestLogService } from './request-log.service';

@Module({ imports: [RecordsModule], providers: [RequestLogService] })
export class LoggingModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(requestIdMiddleware).forRoutes('{*path}');
  }
}
