/**
 * A person at the serial console of a booted stick: picks a GRUB entry, logs
 * in, runs commands and reads their output and exit status, powers off.
 */
import { Vm } from './vm-qemu.js';

const DOWN = '\x1b[B';

export class Session {
  private n = 0;
  constructor(readonly vm: Vm) {}

  /**
   * Picks the menu entry at `index` (0 = the first): one arrow at a time,
   * each checked against GRUB's redraw (`*title` marks the highlighted
   * entry), because a key can be lost on a serial line.
   */
  async pickEntry(titles: string[], index: number): Promise<void> {
    await this.vm.waitFor(titles[0]!, 120_000);
    for (let i = 1; i <= index; i++) {
      for (let attempt = 0; ; attempt++) {
        this.vm.send(DOWN);
        try {
          await this.vm.waitFor(`*${titles[i]}`, 3000);
          break;
        } catch (e) {
          if (attempt >= 3) throw e;
        }
      }
    }
    this.vm.send('\r');
  }

  async login(user: string, password: string): Promise<void> {
    await this.vm.waitFor(/login: $/m, 300_000);
    this.vm.send(`${user}\r`);
    await this.vm.waitFor('Password:', 30_000);
    this.vm.send(`${password}\r`);
    // busybox's ash (Alpine's login shell) asks the terminal for the cursor position after its prompt.
    await this.vm.waitFor(/[#$] (?:\x1b\[6n)?$/m, 60_000);
    // Late kernel messages would land in the middle of command output.
    await this.run('dmesg -n 1');
  }

  /** Runs a shell command; the markers are split in the typed line so its echo never matches. */
  async run(command: string, timeoutMs = 120_000): Promise<{ out: string; code: number }> {
    const id = ++this.n;
    const begin = `__CAIRN_BEGIN_${id}__`;
    const end = `__CAIRN_END_${id}_`;
    this.vm.send(`printf '%s\\n' "__CAIRN_""BEGIN_${id}__"; ${command}; printf '%s%s__\\n' "__CAIRN_""END_${id}_" "$?"\r`);
    await this.vm.waitFor(`${begin}\n`, timeoutMs);
    const m = await this.vm.waitFor(new RegExp(`${end}(\\d+)__`), timeoutMs);
    const all = this.vm.output;
    const from = all.lastIndexOf(`${begin}\n`) + begin.length + 1;
    const out = all.slice(from, all.indexOf(m[0], from)).replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
    return { out: out.trim(), code: Number(m[1]) };
  }

  /** Runs a command that must succeed; returns its output. */
  async ok(command: string, timeoutMs?: number): Promise<string> {
    const r = await this.run(command, timeoutMs);
    if (r.code !== 0) throw new Error(`\`${command}\` exited ${r.code}: ${r.out}`);
    return r.out;
  }

  /** Powers off and waits for QEMU to exit; returns the console text of the shutdown. */
  async powerOff(timeoutMs = 600_000): Promise<string> {
    const from = this.vm.output.length;
    this.vm.send('poweroff\r');
    await this.vm.waitForExit(timeoutMs);
    return this.vm.output.slice(from);
  }
}
