// Request ids across hops (oslo.middleware's request_id): `X-Openstack-Request-Id: req-<uuid>`. A hop takes
// the id the hop before it sent when it has exactly oslo's format, else makes one, logs it on its line for the
// request, passes it on and echoes it in its answer, so one grep follows a guest request from proxy to Nova.
import { randomUUID } from 'node:crypto';

export const REQUEST_ID_HEADER = 'x-openstack-request-id';
/** oslo_middleware.request_id.ID_FORMAT (lower-case hex only): anything else is never logged or passed on. */
export const REQUEST_ID_FORMAT = /^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function newRequestId(): string {
  return `req-${randomUUID()}`;
}

/** The id a request carried if it is well-formed (one header, exact format), else a new one. */
export function requestIdFrom(v: string | string[] | undefined): string {
  return typeof v === 'string' && REQUEST_ID_FORMAT.test(v) ? v : newRequestId();
}
