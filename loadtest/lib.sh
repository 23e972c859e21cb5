# Sourced by the loadtest scripts: a free loopback port, and the twemproxy
# configuration every comparison with twemproxy runs.

# A free loopback port, as the kernel picks one.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# nutcracker's configuration in front of one Redis: twemproxy_config POOL LISTEN_PORT REDIS_PORT.
twemproxy_config() {
    cat <<EOF_YML
$1:
  listen: 127.0.0.1:$2
  redis: true
  hash: fnv1a_64
  distribution: ketama
  preconnect: true
  auto_eject_hosts: false
  server_connections: 1
  servers:
    - 127.0.0.1:$3:1
EOF_YML
}
