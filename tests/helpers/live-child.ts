// Child process for the live crash test: the whole server (core, persister, HTTP + WebSocket) on
// the given database and Redis, listening on LISTEN_PORT (default a free one), which it prints as "PORT <n>". The
// parent SIGKILLs it mid-burst and starts another.
import pino from "pino";
import { loadConfig } from "../../src/config.ts";
import { startCore } from "../../src/main/core.ts";
import { createHttpServer } from "../../src/main/http-app.ts";
import { setUpStripe } from "../../src/payments/stripe.ts";

// Silent unless a test run asks for a log (TEST_CHILD_LOG: a file every child appends to).
const logFile = process.env.TEST_CHILD_LOG;
const logger = logFile
  ? pino(
      { level: process.env.TEST_CHILD_LOG_LEVEL ?? "info" },
      pino.destination({ dest: logFile, append: true }),
    )
  : pino({ level: "silent" });
const config = loadConfig(process.env);
const core = await startCore(config, logger);
const stripe = await setUpStripe(config, logger);
const http = createHttpServer({ config, logger, core, stripe });
const port = await http.listen(Number(process.env.LISTEN_PORT ?? 0), "127.0.0.1");
process.stdout.write(`PORT ${port}\n`);
