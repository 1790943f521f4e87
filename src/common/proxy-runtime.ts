// How a quantum-ns-metadata-proxy process is started: the L3 and DHCP agents (their default
// metadata_proxy_cmd), the proxy's own daemonize step and the benchmark all use these flags, so what is
// measured is what runs. bench/README.md has the numbers behind each.
//
// - --max-semi-space-size=1: a 1 MB young generation. V8's default lets it grow to 16 MB semi-spaces under
//   load and keeps them, and one proxy runs per router.
// - --single-threaded: no V8 background threads for GC or compilation. A proxy's heap is a few MB, so
//   parallel GC buys nothing, while its hand-offs to worker threads cost CPU on every young-generation GC
//   (about 10% of the proxy's CPU per request at 16-64 connections).
export const PROXY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--single-threaded'];

// The shared proxy is one process for every namespace of an agent, so a few MB more young generation is a few
// kilobytes per router, and its old generation holds a thousand listeners: with 1 MB semi-spaces, each of the
// frequent young GCs and the major GCs they bring under load cost more there, and a request through the
// thousand-listener process cost 4-8% more CPU than through a per-namespace proxy. 4 MB semi-spaces (fixed:
// main.ts sets --semi-space-growth-factor=1) make the two the same (bench/shared-proxy.ts's load phase).
export const SHARED_PROXY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--min-semi-space-size=4', '--single-threaded'];
