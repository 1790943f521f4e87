// Errors are values with a status: every layer can map them to HTTP or an exit code without parsing strings.

/** An error an HTTP API returns as-is: status, a machine type name (Neutron's exception class names) and a message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly detail = '',
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const badRequest = (message: string, type = 'BadRequest') => new ApiError(400, type, message);
export const notFound = (message: string, type = 'NotFound') => new ApiError(404, type, message);
export const conflict = (message: string, type = 'Conflict') => new ApiError(409, type, message);

/** Bad configuration or flags: printed as one line, exit status 1. */
export class ConfigError extends Error {
  readonly exitCode = 1;
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** A failed external command (ip, iptables, dnsmasq...). */
export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    readonly signal: string | null = null,
  ) {
    super(`command failed (exit ${exitCode ?? signal}): ${argv.join(' ')}: ${stderr.trim()}`);
    this.name = 'CommandError';
  }
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
