import type { FastifyReply } from "fastify";

const ENTITIES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ENTITIES[c]!);
}

/** Tagged template that escapes every interpolated value unless it is already `Html`. */
export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0] ?? "";
  values.forEach((value, i) => {
    const text = value instanceof Html ? value.value : Array.isArray(value) ? value.map(String).join("") : escapeHtml(String(value ?? ""));
    out += text + (strings[i + 1] ?? "");
  });
  return new Html(out);
}

const STYLE = `body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#1f2328}
h1{font-size:1.4rem}code,kbd{font-family:ui-monospace,monospace;background:#f0f0f0;padding:.1rem .3rem;border-radius:4px}
.code{font:600 1.6rem ui-monospace,monospace;letter-spacing:.1em}.ok{color:#1a7f37}.fail{color:#cf222e}
input{font:inherit;width:100%;padding:.4rem;box-sizing:border-box}button{font:inherit;padding:.4rem 1rem;margin-top:.6rem}`;

/** Sends a complete page with headers that keep it from being framed, cached or leaking its URL. */
export function sendPage(reply: FastifyReply, status: number, title: string, body: Html): FastifyReply {
  const page = html`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>${title} · Workyard</title><style>${new Html(STYLE)}</style></head><body>${body}</body></html>`;
  return reply
    .status(status)
    .header("content-type", "text/html; charset=utf-8")
    .header("cache-control", "no-store")
    .header("referrer-policy", "no-referrer")
    .header("x-frame-options", "DENY")
    .header("x-content-type-options", "nosniff")
    .header("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
    .send(page.value);
}
