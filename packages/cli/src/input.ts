import { LocalError } from "./errors.js";

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks).toString("utf8");
}

/** A capability's input: `-d JSON`, else stdin when it is not a terminal (empty means {}), else {}. */
export async function readRunInput(data: string | undefined, stdin: NodeJS.ReadableStream & { isTTY?: boolean }): Promise<unknown> {
  if (data !== undefined) {
    try {
      return JSON.parse(data);
    } catch (error) {
      throw new LocalError("Invalid JSON in --data", { cause: error, hint: `Pass JSON, e.g. -d '{"name":"value"}'.` });
    }
  }
  if (stdin.isTTY) return {};
  const text = await readAll(stdin);
  if (!text.trim()) return {};
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new LocalError("Invalid JSON from stdin", { cause: error });
  }
}
