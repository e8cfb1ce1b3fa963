// Owns the process logger: JSON lines (pino) for collectors, and pino-pretty's readable lines when
// stdout is a terminal. The log events operators watch have stable names (src/main/observe.ts).
import pino, { type Logger } from "pino";

export function createLogger(level: string): Logger {
  if (process.stdout.isTTY) {
    return pino({
      level,
      transport: { target: "pino-pretty", options: { translateTime: "SYS:HH:MM:ss.l" } },
    });
  }
  return pino({ level });
}
