/**
 * One QEMU boot driven over its serial console. QEMU runs under software
 * emulation (-accel tcg: KVM does not work on the build machines), connects
 * its serial port to a unix socket the test listens on first (so no early
 * output is lost), dies with the test process (setpriv --pdeathsig KILL),
 * and exits instead of rebooting (-no-reboot). Every byte of the console
 * goes to a log file, each line stamped with the seconds since QEMU
 * started; a failed test prints the console.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import type { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { escapeRegExp } from '../../src/lib/format.js';
import { stickBootArgs, type StickBootOptions } from '../../src/vm/qemu.js';

export const QEMU = 'qemu-system-x86_64';

/** GRUB's banner on the console, its version the first group: which GRUB core booted. */
export const GRUB_BANNER = /GNU GRUB +version (\S+)\s/;

export interface VmOptions {
  /** Names the log file: the test case. */
  name: string;
  /** A direct kernel boot; or `stick` for a boot through firmware and GRUB. */
  kernel?: string;
  initrd?: string;
  /** The kernel command line; console=ttyS0 and no_timer_check are added. */
  append?: string;
  /** A stick image booted the way a machine boots it (src/vm/qemu.ts). */
  stick?: Omit<StickBootOptions, 'serial' | 'accel' | 'memoryMiB'>;
  /**
   * Or a program that starts QEMU itself with the serial console on its
   * standard input and output, as a user runs it (`cairn vm IMAGE`); what
   * it prints on standard error is kept in `stderr`.
   */
  command?: string[];
  /** Raw disk images on virtio, in order (vda, vdb, ...); the guest's writes are thrown away. */
  disks?: string[];
  memoryMiB?: number;
  /** Where the console logs are kept (default: $TMPDIR/cairn-vm-logs). */
  logDir?: string;
}

export class Vm {
  /** The console output so far, with \r removed. */
  output = '';
  readonly logFile: string;
  readonly started = Date.now();
  /** What a `command` printed on its standard error. */
  stderr = '';
  private cursor = 0;
  private atLineStart = true;
  /** Where typed text goes: the console socket, or a command's standard input. */
  private socket?: Writable;
  private exit?: { code: number | null; signal: string | null };
  private readonly waiters = new Set<() => void>();

  private constructor(
    private readonly qemu: ChildProcess,
    private readonly server: Server,
    private readonly sockDir: string,
    logFile: string,
  ) {
    this.logFile = logFile;
  }

  static async start(opts: VmOptions): Promise<Vm> {
    const logDir = opts.logDir ?? join(tmpdir(), 'cairn-vm-logs');
    mkdirSync(logDir, { recursive: true });
    const logFile = join(logDir, `${opts.name.replace(/[^A-Za-z0-9._-]+/g, '-')}.log`);
    writeFileSync(logFile, '');
    const sockDir = mkdtempSync(join(tmpdir(), 'cairn-vm-'));
    const sock = join(sockDir, 'console.sock');
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(sock, resolve);
    });
    const chardev = ['-chardev', `socket,id=console,path=${sock}`];
    const machine = opts.stick
      ? [...chardev, '-monitor', 'none', ...stickBootArgs({ ...opts.stick, accel: 'tcg', memoryMiB: opts.memoryMiB ?? 1024, serial: 'chardev:console' })]
      : [
          '-accel', 'tcg',
          '-m', String(opts.memoryMiB ?? 512),
          '-smp', '1',
          '-no-reboot',
          '-nodefaults',
          '-display', 'none',
          '-monitor', 'none',
          ...chardev,
          '-serial', 'chardev:console',
          '-kernel', opts.kernel ?? '',
          '-initrd', opts.initrd ?? '',
          // no_timer_check: under software emulation on a loaded host the
          // kernel's IO-APIC timer check can miss its ticks and panic
          // ("IO-APIC + timer doesn't work!"), as a CI run here once did.
          '-append', `console=ttyS0 no_timer_check ${opts.append ?? ''}`,
        ];
    const args = [
      '--pdeathsig', 'KILL', '--',
      ...(opts.command ?? [
        QEMU,
        ...machine,
        ...(opts.disks ?? []).flatMap((d) => ['-drive', `file=${d},format=raw,if=virtio,snapshot=on`]),
      ]),
    ];
    appendFileSync(logFile, `# setpriv ${args.join(' ')}\n`);
    const qemu = spawn('setpriv', args, { stdio: [opts.command ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    const vm = new Vm(qemu, server, sockDir, logFile);
    const onConsole = (b: Buffer) => {
      const text = b.toString('latin1').replace(/\r/g, '');
      appendFileSync(logFile, vm.stamped(text), 'latin1');
      vm.output += text;
      vm.wake();
    };
    if (opts.command) {
      vm.socket = qemu.stdin!;
      qemu.stdout?.on('data', onConsole);
      qemu.stderr?.on('data', (b: Buffer) => {
        vm.stderr += b.toString();
        appendFileSync(logFile, `# stderr: ${b.toString()}`);
      });
    } else {
      qemu.stdout?.on('data', (b: Buffer) => appendFileSync(logFile, `# qemu: ${b.toString()}`));
      qemu.stderr?.on('data', (b: Buffer) => appendFileSync(logFile, `# qemu: ${b.toString()}`));
    }
    qemu.on('error', (e) => {
      vm.exit = { code: null, signal: `spawn failed: ${e.message}` };
      vm.wake();
    });
    qemu.on('exit', (code, signal) => {
      vm.exit = { code, signal };
      appendFileSync(logFile, `\n# qemu exited: code ${code} signal ${signal} after ${vm.seconds()} s\n`);
      vm.wake();
    });
    server.on('connection', (s) => {
      vm.socket = s;
      s.on('data', onConsole);
    });
    return vm;
  }

  /**
   * TEXT with the seconds since QEMU started at the head of each line, for
   * the log file: where a boot spends its time is read from there.
   */
  private stamped(text: string): string {
    let out = '';
    for (const ch of text.split(/(?<=\n)/)) {
      if (this.atLineStart) out += `[${this.seconds().toFixed(1).padStart(6)}] `;
      out += ch;
      this.atLineStart = ch.endsWith('\n');
    }
    return out;
  }

  /** Seconds since QEMU was started. */
  seconds(): number {
    return Math.round((Date.now() - this.started) / 100) / 10;
  }

  get exited(): boolean {
    return this.exit !== undefined;
  }

  /**
   * Waits until PATTERN appears in the output after the last match, and
   * returns the match; fails after TIMEOUTMS, or when QEMU exits first.
   */
  async waitFor(pattern: RegExp | string, timeoutMs: number): Promise<RegExpExecArray> {
    const re = typeof pattern === 'string' ? new RegExp(escapeRegExp(pattern)) : pattern;
    return this.until(timeoutMs, `${re} on the console`, () => {
      const m = re.exec(this.output.slice(this.cursor));
      if (!m) return undefined;
      this.cursor += m.index + m[0].length;
      return m;
    });
  }

  /** Waits for QEMU to exit (the guest powered off, or panicked with -no-reboot). */
  async waitForExit(timeoutMs: number): Promise<{ code: number | null; signal: string | null }> {
    return this.until(timeoutMs, 'QEMU to exit', () => this.exit, false);
  }

  /** Sends text to the console as if typed (use \r for Enter). */
  send(text: string): void {
    if (!this.socket) throw new Error('the console is not connected yet');
    this.socket.write(text);
  }

  /** Kills QEMU if it still runs and removes the socket. Safe to call twice. */
  async stop(): Promise<void> {
    if (!this.exit) {
      this.qemu.kill('SIGKILL');
      await this.until(10_000, 'QEMU to die', () => this.exit, false).catch(() => undefined);
    }
    this.socket?.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.sockDir, { recursive: true, force: true });
  }

  private wake(): void {
    for (const w of this.waiters) w();
  }

  private until<T>(timeoutMs: number, what: string, check: () => T | undefined, failOnExit = true): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const attempt = () => {
        const value = check();
        if (value !== undefined) return done(() => resolve(value));
        if (failOnExit && this.exit) {
          return done(() => reject(new Error(`QEMU exited (code ${this.exit!.code}, ${this.exit!.signal ?? 'no signal'}) before ${what}, after ${this.seconds()} s`)));
        }
      };
      const timer = setTimeout(() => done(() => reject(new Error(`no ${what} within ${timeoutMs / 1000} s (${this.seconds()} s since start)`))), timeoutMs);
      const done = (fn: () => void) => {
        clearTimeout(timer);
        this.waiters.delete(attempt);
        fn();
      };
      this.waiters.add(attempt);
      attempt();
    });
  }
}
