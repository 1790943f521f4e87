// cloud-init (Debian's package, its own Python library) as a metadata client in tests.

/** Debian's python, which has the cloudinit package (the `python3` on PATH may be another one). */
export const CLOUDINIT_PYTHON = '/usr/bin/python3';

/**
 * A Python prelude: imports cloud-init's readers and records every URL they fetch with its status in `seen`
 * (a list of [url, code]), so a test can require that every fetch answered 200.
 */
export const CLOUDINIT_RECORDER = String.raw`
import json, sys
from cloudinit import url_helper
from cloudinit.sources.helpers import openstack, ec2
seen = []
real = url_helper.readurl
def recording(url, *a, **kw):
    try:
        r = real(url, *a, **kw)
        seen.append([url, r.code])
        return r
    except url_helper.UrlError as e:
        seen.append([url, e.code])
        raise
url_helper.readurl = recording
`;
