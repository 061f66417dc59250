/** Builds the policy named in the configuration. */
import { SchedulerConfig } from '../config';
import { FifoPolicy } from './fifo';
import { InlaidPolicy } from './inlaid';
import { MlfqPolicy } from './mlfq';
import { Policy } from './policy';

export function createPolicy(cfg: SchedulerConfig): Policy {
  switch (cfg.policy) {
    case 'inlaid':
      return new InlaidPolicy(cfg.inlaid);
    case 'fifo':
      return new FifoPolicy('fifo');
    case 'fcfs-maxloras':
      return new FifoPolicy('fcfs-maxloras', cfg.maxLoras);
    case 'mlfq':
      return new MlfqPolicy(cfg.mlfq);
  }
}
