// Worker thread entry of the AI pool (piscina): loads the TypeScript text analysis through tsx,
// whether or not the parent process runs under tsx (vitest does not).
import { tsImport } from "tsx/esm/api";

const { runAiTask } = await tsImport("./analyze.ts", import.meta.url);

export default function run(task) {
  return runAiTask(task);
}
