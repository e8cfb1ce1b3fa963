// Owns sending a rendered email: the Mailer interface, nodemailer over SMTP (SMTP_URL), and the
// local catcher used without SMTP_URL, which writes each message as an .eml file (any mail
// client opens them) under MAIL_CATCHER_DIR instead of sending it.
import { mkdir, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import nodemailer, { type Transporter } from "nodemailer";
import type { Logger } from "pino";
import type { Config } from "../config.ts";

export interface MailMessage {
  from: string;
  to: { name: string; address: string };
  subject: string;
  text: string;
  html: string;
  /** A stable Message-ID per event, so a mail client can tell a resent copy from a new email. */
  messageId: string;
}

export interface Mailer {
  send(m: MailMessage): Promise<{ messageId: string }>;
  close(): Promise<void>;
}

/** An SMTP answer that will not change on a retry: 5xx (a 4xx or a dead connection may). */
export function isPermanentSmtpError(err: unknown): boolean {
  const code = (err as { responseCode?: unknown }).responseCode;
  return typeof code === "number" && code >= 500 && code < 600;
}

export class SmtpMailer implements Mailer {
  private readonly transport: Transporter;

  constructor(smtpUrl: string, timeoutMs: number) {
    const u = new URL(smtpUrl);
    const secure = u.protocol === "smtps:";
    this.transport = nodemailer.createTransport({
      host: u.hostname,
      port: u.port ? Number(u.port) : secure ? 465 : 587,
      secure,
      ...(u.username
        ? { auth: { user: decodeURIComponent(u.username), pass: decodeURIComponent(u.password) } }
        : {}),
      connectionTimeout: timeoutMs,
      greetingTimeout: timeoutMs,
      socketTimeout: timeoutMs,
    });
  }

  async send(m: MailMessage): Promise<{ messageId: string }> {
    const info = await this.transport.sendMail(m);
    return { messageId: info.messageId };
  }

  async close(): Promise<void> {
    this.transport.close();
  }
}

/** Keeps mail local: each message is written as <dir>/<time>-<message id>.eml. */
export class CatcherMailer implements Mailer {
  private readonly transport = nodemailer.createTransport({
    streamTransport: true,
    buffer: true,
    newline: "unix",
  });

  constructor(readonly dir: string) {}

  async send(m: MailMessage): Promise<{ messageId: string }> {
    const info = await this.transport.sendMail(m);
    await mkdir(this.dir, { recursive: true });
    // <job id@domain> -> <time>-<job id>.eml
    const id = m.messageId.replace(/^<|@.*$/g, "").replace(/[^A-Za-z0-9_.-]/g, "");
    const name = `${new Date().toISOString().replace(/[:.]/g, "-")}-${id}.eml`;
    await writeFile(resolve(this.dir, name), info.message as Buffer);
    return { messageId: info.messageId };
  }

  async close(): Promise<void> {}
}

/** SMTP when SMTP_URL is set; otherwise the local catcher, said in one log line. */
export function createMailer(config: Config, logger: Logger): Mailer {
  if (config.SMTP_URL) return new SmtpMailer(config.SMTP_URL, config.SMTP_TIMEOUT_MS);
  const dir = resolve(config.MAIL_CATCHER_DIR);
  logger.warn({ dir }, `SMTP_URL is not set: emails are not sent but written as .eml files to ${dir}`);
  return new CatcherMailer(dir);
}
