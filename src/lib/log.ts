import pino from 'pino';

/**
 * The one logger. It writes JSON lines to stderr so that stdout stays free for
 * what a command reports (text or --json). Level from CAIRN_LOG or --debug.
 */
export const log = pino(
  { level: process.env.CAIRN_LOG ?? 'warn', base: undefined },
  pino.destination({ fd: 2, sync: true }),
);

export function setLogLevel(level: pino.Level): void {
  log.level = level;
}
