// haproxy configured as Neutron's L3 agent configures it: the text of METADATA_HAPROXY_GLOBAL
// (neutron/common/metadata.py, with nbthread 2) + _UNLIMITED_CONFIG_TEMPLATE + _HEADER_CONFIG_TEMPLATE
// (neutron/agent/metadata/driver.py), rendered for a router: bind 0.0.0.0:<port>, no IPv6 bind line.
import { userInfo } from 'node:os';
import { execFileSync } from 'node:child_process';

export interface HaproxyParams {
  routerId: string;
  port: number;
  socketPath: string;
  pidFile: string;
  debug?: boolean;
}

function groupName(): string {
  try {
    return execFileSync('id', ['-gn']).toString().trim();
  } catch {
    return String(process.getegid?.() ?? 0);
  }
}

export function neutronHaproxyConfig(p: HaproxyParams): string {
  const cfg = {
    log_level: p.debug ? 'debug' : 'info',
    log_tag: `haproxy-metadata-proxy-${p.routerId}`,
    // The agent's euid/egid resolved to names, as _get_metadata_proxy_user_group + create_config_file do.
    user: userInfo().username,
    group: groupName(),
    pidfile: p.pidFile,
    host: '0.0.0.0',
    port: p.port,
    bind_v6_line: '',
    unix_socket_path: p.socketPath,
    res_type: 'Router',
    res_type_del: 'Network',
    res_id: p.routerId,
  };
  const global = `
global
    log         /dev/log local0 ${cfg.log_level}
    log-tag     ${cfg.log_tag}
    user        ${cfg.user}
    group       ${cfg.group}
    maxconn     1024
    nbthread    2
    pidfile     ${cfg.pidfile}
    daemon

defaults
    log global
    mode http
    option httplog
    option dontlognull
    option http-server-close
    option forwardfor
    retries                 3
    timeout http-request    30s
    timeout connect         30s
    timeout client          32s
    timeout server          32s
    timeout http-keep-alive 30s
`;
  const unlimited = `
listen listener
    bind ${cfg.host}:${cfg.port}
    ${cfg.bind_v6_line}
    server metadata ${cfg.unix_socket_path}
`;
  const header = `
    http-request del-header X-Neutron-${cfg.res_type_del}-ID
    http-request set-header X-Neutron-${cfg.res_type}-ID ${cfg.res_id}
`;
  return global + unlimited + header;
}

/** haproxy argv: Neutron runs `haproxy -f <conf>`; -db keeps it in the foreground so we own its pid. */
export function haproxyArgv(confPath: string): string[] {
  return ['haproxy', '-f', confPath, '-db'];
}
