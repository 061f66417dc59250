import type { ToolEvent } from '../openai/tool-events';

/** The assistant message a client reassembles from tool-parser events (content and calls). */
export interface ToolMessage {
  content: string;
  calls: { name: string; arguments: string }[];
}

/** The message the events reassemble to, as a stream's client does: content concatenated, each call's name from
 * its first delta and its arguments from all of them. */
export function toolMessage(events: ToolEvent[]): ToolMessage {
  let content = '';
  const calls: ToolMessage['calls'] = [];
  for (const e of events) {
    if ('content' in e) content += e.content;
    else if (e.call.function.name !== undefined) calls[e.call.index] = { name: e.call.function.name, arguments: e.call.function.arguments };
    else (calls[e.call.index] as { arguments: string }).arguments += e.call.function.arguments;
  }
  return { content, calls };
}
