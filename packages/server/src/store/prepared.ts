import { CompiledQuery, type Compilable, type Kysely } from "kysely";
import type { Database } from "./schema.js";

type Db = Kysely<Database>;

/** A prepared statement's parameters, by name. */
type Params = Record<string, unknown>;

/**
 * A query of the hot path, built and compiled by Kysely once per database (SQL differs between
 * engines) instead of on every request: compiling costs ~10 µs, more than an indexed SQLite read.
 *
 * Parameters are named: `build` receives an object whose every property is a placeholder, and
 * where each placeholder lands among the compiled parameters is where that name's value goes on
 * each call. `build` reads the parameters one by one (`p.workerId`); spreading or enumerating
 * them finds nothing, and a parameter read but not bound (used in a condition, say) is refused
 * when the query is compiled.
 */
export function prepared<P extends Params, Row>(build: (db: Db, params: P) => Compilable<Row>) {
  const compiled = new WeakMap<Db, { sql: string; slots: ({ name: string } | { value: unknown })[] }>();
  const compile = (db: Db, params: P): CompiledQuery<Row> => {
    let entry = compiled.get(db);
    if (!entry) {
      const read = new Set<string>();
      const placeholders = new Proxy({} as P, {
        get(_target, name) {
          if (typeof name !== "string") return undefined;
          read.add(name);
          return `\u0000workyard-param-${name}\u0000`;
        },
      });
      const query = build(db, placeholders).compile();
      const slots = query.parameters.map((p) => {
        const match = typeof p === "string" ? /^\u0000workyard-param-(.+)\u0000$/.exec(p) : null;
        return match ? { name: match[1]! } : { value: p };
      });
      const bound = new Set(slots.flatMap((slot) => ("name" in slot ? [slot.name] : [])));
      const unbound = [...read].filter((name) => !bound.has(name));
      if (unbound.length > 0) throw new Error(`A prepared query reads ${unbound.join(", ")} without binding it as a parameter.`);
      entry = { sql: query.sql, slots };
      compiled.set(db, entry);
    }
    const parameters = entry.slots.map((slot) => ("name" in slot ? params[slot.name] : slot.value));
    return CompiledQuery.raw(entry.sql, parameters) as CompiledQuery<Row>;
  };
  const run = async (db: Db, params: P): Promise<Row[]> => (await db.executeQuery<Row>(compile(db, params))).rows;
  /** The compiled query with these values, to execute elsewhere (a writer thread). */
  run.compile = compile;
  return run;
}
