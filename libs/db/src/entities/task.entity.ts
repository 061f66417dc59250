/** A task: one LoRA adapter served on the shared base model, addressed by its name as the OpenAI `model`. */
import { Column, CreateDateColumn, Entity, PrimaryColumn, UpdateDateColumn } from 'typeorm';

export type TaskStatus = 'registered' | 'serving' | 'unloaded' | 'failed';

@Entity({ name: 'tasks' })
export class Task {
  @PrimaryColumn({ type: 'text' })
  name!: string;

  /** Directory (or URI) holding adapter_config.json + adapter_model.safetensors; null when unknown. */
  @Column({ name: 'adapter_location', type: 'text', nullable: true })
  adapterLocation!: string | null;

  @Column({ type: 'integer' })
  rank!: number;

  @Column({ name: 'target_modules', type: 'text', array: true, default: () => "'{}'" })
  targetModules!: string[];

  @Column({ type: 'text', default: 'registered' })
  status!: TaskStatus;

  /** SLO target for time to first token (ms; POST /v1/tasks `slo.ttft_ms`); null = the default in slo_defaults. */
  @Column({ name: 'slo_ttft_ms', type: 'double precision', nullable: true })
  sloTtftMs!: number | null;

  /** SLO target for time per output token (ms; POST /v1/tasks `slo.tpot_ms`); null = the default in slo_defaults. */
  @Column({ name: 'slo_tpot_ms', type: 'double precision', nullable: true })
  sloTpotMs!: number | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' })
  updatedAt!: Date;
}
