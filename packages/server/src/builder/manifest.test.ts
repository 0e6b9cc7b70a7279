import { describe, expect, it } from "vitest";
import { capabilitiesOf } from "./manifest.js";

describe("capabilitiesOf", () => {
  it("parses a row's capabilities once, and again when the row's column changes", () => {
    const row = { capabilities: JSON.stringify([{ _tag: "tool", key: "ping" }]) };
    const first = capabilitiesOf(row);
    expect(first).toEqual([{ _tag: "tool", key: "ping" }]);
    expect(capabilitiesOf(row)).toBe(first);
    row.capabilities = JSON.stringify([{ _tag: "webhook", key: "hook" }]);
    expect(capabilitiesOf(row)).toEqual([{ _tag: "webhook", key: "hook" }]);
  });

  it("answers a shared list callers cannot change, and none for a row without capabilities", () => {
    const list = capabilitiesOf({ capabilities: JSON.stringify([{ _tag: "tool", key: "ping" }]) });
    expect(() => (list as { _tag: string; key: string }[]).push({ _tag: "tool", key: "other" })).toThrow(TypeError);
    expect(() => ((list[0] as { key: string }).key = "other")).toThrow(TypeError);
    expect(capabilitiesOf({ capabilities: null })).toEqual([]);
    expect(capabilitiesOf(undefined)).toEqual([]);
  });
});
