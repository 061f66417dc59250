/** One served (or refused) generation request, with its timeline and token counts. */
import { Column, Entity, Index, PrimaryColumn } from 'typeorm';

export type RequestStatus = 'completed' | 'aborted' | 'failed' | 'rejected';

@Entity({ name: 'request_records' })
export class RequestRecord {
  /**
   * The row's own key: the gateway gives each record one when it buffers it (a retried batch is then written once);
   * a row inserted without one gets a fresh one.
   */
  @PrimaryColumn({ name: 'record_id', type: 'uuid', default: () => 'gen_random_uuid()' })
  recordId?: string;

  /** The request's id (`<principal>/<request_id>` for a gRPC client's own); a client may reuse one once its request ended. */
  @Index('idx_request_records_id')
  @Column({ type: 'text' })
  id!: string;

  /** Task name, or the base model id for base-model requests. */
  @Index('idx_request_records_task')
  @Column({ type: 'text' })
  task!: string;

  @Column({ type: 'text' })
  api!: string;

  @Index('idx_request_records_arrival')
  @Column({ type: 'timestamptz' })
  arrival!: Date;

  @Column({ name: 'first_token', type: 'timestamptz', nullable: true })
  firstToken!: Date | null;

  @Column({ type: 'timestamptz', nullable: true })
  finish!: Date | null;

  @Column({ name: 'tokens_in', type: 'integer', default: 0 })
  tokensIn!: number;

  @Column({ name: 'tokens_out', type: 'integer', default: 0 })
  tokensOut!: number;

  @Column({ type: 'text' })
  status!: RequestStatus;

  /** OpenAI finish reason (stop, length) when the request completed. */
  @Column({ name: 'finish_reason', type: 'text', nullable: true })
  finishReason!: string | null;

  @Column({ type: 'text', nullable: true })
  error!: string | null;

  @Column({ name: 'worker', type: 'text', nullable: true })
  worker!: string | null;
}
