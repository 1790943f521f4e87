#!/usr/bin/env bash
# The quick start. As root on Debian 12:
#   ./install.sh demo   install what is missing, build, start the all-in-one stack and the demo guests (noauth)
#   ./install.sh demo --keystone   the same with a local Keystone (python3-keystone, MariaDB) and auth_strategy = keystone
#   ./install.sh test   install what is missing, build, run the whole test suite
#   ./install.sh stop   stop the all-in-one stack and remove everything it made
# Further arguments go to `quantum-aio start` / `quantum-aio stop` (e.g. --data-dir, stop --purge).
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-}
case "$mode" in demo|test|stop) ;; *) echo "usage: $0 demo [--keystone] | test | stop [--purge]" >&2; exit 2 ;; esac
shift
keystone=0
for a in "$@"; do [ "$a" = --keystone ] && keystone=1; done

if [ "$(id -u)" != 0 ]; then echo "$0: run as root (the stack builds network namespaces)" >&2; exit 1; fi

# gcc + libc6-dev: `npm run build` compiles the small netns addon (src/linux/native/netns.c) against node's headers.
# iputils-arping: the L3 agent's gratuitous ARPs for new router interfaces (send_arp_for_ha).
pkgs=(iproute2 iptables iputils-arping dnsmasq-base isc-dhcp-client curl procps kmod gcc libc6-dev)
# python3-keystone, python3-openstackclient: the Keystone suites run a private Keystone (keystone-manage,
# keystone-wsgi-public, a fresh MariaDB database) and drive the stack with an unmodified openstackclient.
# rabbitmq-server: test/messaging.test.ts starts a private node of its own (own port, epmd, cookie, data in a
# temp dir); Debian's package also starts the system service on install, which the tests neither need nor touch.
[ "$mode" = test ] && pkgs+=(mariadb-server haproxy wrk cloud-init python3 rabbitmq-server python3-keystone python3-openstackclient cloud-guest-utils python3-botocore)
[ "$mode" = demo ] && pkgs+=(cloud-init python3)
[ "$mode" = demo ] && [ $keystone = 1 ] && pkgs+=(mariadb-server python3-keystone)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "$0: Node.js 20 or newer is required (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

# --prefer-offline: the lockfile pins every version, so packages already in npm's cache are taken from it without
# asking the registry again (a rebuilt checkout installs with the registry unreachable); missing ones are fetched.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --prefer-offline --no-audit --no-fund
fi
npm run build --silent

# The local MariaDB (root, no password on 127.0.0.1): the storage tests' MariaDB half and Keystone's database.
start_mariadb() {
  if ! mysqladmin ping -h 127.0.0.1 --silent 2>/dev/null; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    for _ in $(seq 1 60); do mysqladmin ping -h 127.0.0.1 --silent 2>/dev/null && break; sleep 0.5; done
  fi
}

case "$mode" in
  test)
    start_mariadb
    npm test
    ;;
  demo)
    [ $keystone = 1 ] && start_mariadb
    exec node dist/src/aio/main.js start "$@"
    ;;
  stop)
    exec node dist/src/aio/main.js stop "$@"
    ;;
esac
