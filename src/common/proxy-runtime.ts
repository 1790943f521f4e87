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
