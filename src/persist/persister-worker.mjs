// Worker thread entry of the WAL persister: loads its TypeScript through tsx, whether or not the
// parent process runs under tsx (vitest does not).
import { tsImport } from "tsx/esm/api";

await tsImport("./persister-worker.ts", import.meta.url);
