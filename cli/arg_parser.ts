/**
 * A strict command-line parser: the subset of `node:util` parseArgs that
 * poolboy's commands use, with the same rules, and no `node:` import.
 *
 * Why not parseArgs itself: importing any `node:` module starts Deno's Node
 * compatibility layer, ~4.5 MB of resident memory (measured: an empty script
 * 29.0 MB, one importing `node:util` 33.6 MB), in every command — among them
 * `apply`, whose whole budget on a device is 64 MB.
 *
 * Rules (those of parseArgs with `strict: true, allowPositionals: true`):
 * `--name value` and `--name=value` for a string option; `--name` for a
 * boolean one (`--name=value` is refused); `-x` for an option with `short:
 * "x"`, `-xyz` for several boolean shorts, `-xVALUE` and `-x VALUE` for a
 * string short; a value may not start with `-` unless written `--name=-v`;
 * `--` ends the options (what follows is positional), and `-` alone is a
 * positional; an option given twice keeps its last value unless `multiple`
 * (then every value, in order). Unknown options are refused.
 *
 * @module
 */

/** One option: its type, an optional one-letter short name, whether it repeats. */
export interface OptionSpec {
  readonly type: "boolean" | "string";
  readonly short?: string;
  readonly multiple?: boolean;
}

/** Option specs by long name. */
export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

/** The value type of one option. */
type ValueOf<S extends OptionSpec> = S extends { type: "boolean" }
  ? S extends { multiple: true } ? boolean[] : boolean
  : S extends { multiple: true } ? string[]
  : string;

/** The parsed values: each option absent (undefined) or its value(s). */
export type ParsedValues<T extends OptionSpecs> = { -readonly [K in keyof T]?: ValueOf<T[K]> };

/** What `parseArguments` returns. */
export interface Parsed<T extends OptionSpecs> {
  values: ParsedValues<T>;
  positionals: string[];
}

/** Why arguments were refused; `message` is one short sentence ("unknown option --x"). */
export class ArgumentError extends Error {}

/** Parses `args` against `options` (see the module's rules); throws `ArgumentError`. */
export function parseArguments<T extends OptionSpecs>(
  args: readonly string[],
  options: T,
): Parsed<T> {
  const values: Record<string, unknown> = {};
  const positionals: string[] = [];
  const byShort = new Map<string, string>();
  for (const [name, spec] of Object.entries(options)) {
    if (spec.short !== undefined) byShort.set(spec.short, name);
  }
  const set = (name: string, value: string | boolean) => {
    if (options[name].multiple) {
      const list = (values[name] ??= []) as Array<string | boolean>;
      list.push(value);
    } else values[name] = value;
  };
  /** The value of string option `name` shown as `shown`, from the next argument. */
  const next = (i: number, shown: string): string => {
    const value = args[i + 1];
    if (value === undefined || value.startsWith("-")) {
      throw new ArgumentError(`option ${shown} needs a value`);
    }
    return value;
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
      const spec = Object.hasOwn(options, name) ? options[name] : undefined;
      if (spec === undefined) throw new ArgumentError(`unknown option --${name}`);
      if (spec.type === "boolean") {
        if (eq !== -1) throw new ArgumentError(`option --${name} takes no value`);
        set(name, true);
      } else if (eq !== -1) {
        set(name, arg.slice(eq + 1));
      } else {
        set(name, next(i, `--${name}`));
        i++;
      }
      continue;
    }
    if (arg.startsWith("-") && arg.length > 1) {
      for (let j = 1; j < arg.length; j++) {
        const letter = arg[j];
        const name = byShort.get(letter);
        if (name === undefined) throw new ArgumentError(`unknown option -${letter}`);
        if (options[name].type === "boolean") {
          set(name, true);
          continue;
        }
        if (j + 1 < arg.length) set(name, arg.slice(j + 1));
        else {
          set(name, next(i, `-${letter}, --${name}`));
          i++;
        }
        break;
      }
      continue;
    }
    positionals.push(arg);
  }
  return { values: values as ParsedValues<T>, positionals };
}
