#!/usr/bin/env bash
# `kubelan expose` on the lab (pod → laptop, the laptop behind the edge router's NAT),
# against an SSH remote forward (`ssh -R`, KtConnect's mechanism: an sshd in a pod, a
# Service in front of its forwarded ports, the laptop's ssh reaching the sshd pod), over the
# same lab paths, in the same run, the methods alternating per round.
#
#   sudo bench/expose.sh [ROUNDS]          # default 2 rounds
#
# The laptop runs the servers on 127.0.0.1 (nginx :8080 with a 612-byte page, iperf3 -s
# :5201). A client pod (`benchclient`, running pbclient and iperf3 from the machine's file
# system) connects to a ClusterIP Service in front of each method's in-cluster end. Paths:
#
#   expose-pf:  client pod ─ Service bx-pf ─ relay pod ══ kubelan's session (one
#               multiplexed carrier, no TLS of its own) over one API-server port-forward
#               (WebSocket over TLS, kube-rs) ══ kubelan expose (laptop) ─ 127.0.0.1
#   ssh-pf:     client pod ─ Service sshr ─ sshd pod ══ SSH over one API-server
#               port-forward (`kubelan forward pod/sshd 2222:22`, the same kube-rs
#               WebSocket port-forward; KtConnect's exact mechanism, where kubectl
#               port-forward is used) ══ ssh -R (laptop) ─ 127.0.0.1
#   expose-ag:  client pod ─ Service bx-ag ─ relay pod ══ kubelan's session (as above)
#               over one flow of the agent's session (its mTLS carrier laptop → node →
#               agent pod, then TCP agent pod → relay pod) ══ kubelan expose (laptop) ─
#               127.0.0.1
#   ssh-proxy:  client pod ─ Service sshr ─ sshd pod ══ SSH over one flow of the agent's
#               session (ssh's ProxyCommand is socat to `kubelan proxy`'s HTTP CONNECT:
#               laptop → node → agent pod → sshd pod) ══ ssh -R (laptop) ─ 127.0.0.1
#   ssh-np:     client pod ─ Service sshr ─ sshd pod ══ SSH straight to a NodePort of the
#               sshd pod (laptop → node → sshd pod; no kubelan at all: ssh's best case, one
#               hop shorter than expose-ag, which passes the agent pod)
#
# ssh uses OpenSSH's defaults (cipher chacha20-poly1305@openssh.com with OpenSSH 9.x);
# SSH_OPTS adds options (e.g. SSH_OPTS="-c aes128-gcm@openssh.com"). The sshd pod runs on
# the node of the relay of bx-pf, so the pods of the pf pair sit on the same node.
#
# Measured per method, from the client pod to the Service's ClusterIP: HTTP latency
# (pbclient lat: a fresh connection per GET, 200 requests, p50/p99), connections/s (pbclient
# rate, 8 concurrent clients, 5 s) and iperf3 throughput both ways (-t 5: pod → laptop;
# -R: laptop → pod). Issue 18's targets: expose's throughput and connections/s ≥ 1.5× ssh
# -R's, its p50 ≤ ssh -R's. Everything is bounded in time; every process started is
# killed by PID on exit and the lab removed.
set -euo pipefail
ROUNDS=${1:-2}
cd "$(dirname "$0")/.."
BIN=${KUBELAN_BIN:-$PWD/target/release/kubelan}
PBSRC=${PBCLIENT_SRC:-$PWD/../shared/bench/tools/pbclient.rs}
SSH_OPTS=${SSH_OPTS:-}
[ -x "$BIN" ] || { echo "build first: cargo build --release --locked -p kubelan" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (the lab)" >&2; exit 1; }
for t in nginx iperf3 rustc python3 kubectl ssh ssh-keygen /usr/sbin/sshd socat curl; do
  command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }
done
[ -f "$PBSRC" ] || { echo "needs pbclient.rs (PBCLIENT_SRC=...)" >&2; exit 1; }

LAB=exb$(( $$ % 100000 ))
TMP=$(mktemp -d /tmp/kubelan-exbench.XXXXXX)
chmod 755 "$TMP"
# shellcheck source=lab.inc
source "$(dirname "${BASH_SOURCE[0]}")/lab.inc"

rustc --edition 2021 -O -o "$TMP/pbclient" "$PBSRC"
lab_start

# The laptop's servers.
mkdir -p "$TMP/www" "$TMP/nginx"
head -c 612 /dev/zero | tr '\0' x >"$TMP/www/index.html"
cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  server { listen 127.0.0.1:8080 backlog=4096; root $TMP/www; }
}
EOF
chmod -R a+rX "$TMP"
spawn laptop nginx nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx.conf"
spawn laptop iperf3 iperf3 -s -B 127.0.0.1 -p 5201
wait_for "the laptop's nginx" 20 on laptop curl -sf -m 2 -o /dev/null http://127.0.0.1:8080/

# The agent, and the two expose sessions.
on laptop kubelan install >"$TMP/install.log" 2>&1
spawn laptop expose-pf kubelan expose 8080 5201 --name bx-pf --via port-forward
spawn laptop expose-ag kubelan expose 8080 5201 --name bx-ag --via agent
wait_for "expose --via port-forward" 120 grep -q '^serving ' "$TMP/expose-pf.log"
wait_for "expose --via agent" 120 grep -q '^serving ' "$TMP/expose-ag.log"
relay_node() { # service: the node of its relay pod
  local sel
  sel=$(k get service "$1" -o jsonpath='{.spec.selector.kubelan\.io/session}')
  k get pods -l "kubelan.io/session=$sel" -o jsonpath='{.items[0].spec.nodeName}'
}
PF_NODE=$(relay_node bx-pf)
AG_NODE=$(relay_node bx-ag)

# The sshd pod (its config and keys come from a hostPath of $TMP), its Services, the
# client pod.
ssh-keygen -q -t ed25519 -N '' -f "$TMP/ssh_host_ed25519_key"
ssh-keygen -q -t ed25519 -N '' -f "$TMP/id_ed25519"
cp "$TMP/id_ed25519.pub" "$TMP/authorized_keys"
cat >"$TMP/sshd_config" <<'EOF'
Port 22
ListenAddress 0.0.0.0
HostKey /srv/bench/ssh_host_ed25519_key
PidFile none
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile /srv/bench/authorized_keys
StrictModes no
GatewayPorts yes
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
MaxStartups 100
LogLevel ERROR
EOF
chmod 600 "$TMP/ssh_host_ed25519_key" "$TMP/id_ed25519"
NODESEL=""
[ -n "$PF_NODE" ] && NODESEL="nodeSelector: {kubernetes.io/hostname: $PF_NODE}"
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: sshd, labels: {app: sshd}}
spec:
  $NODESEL
  containers:
    - name: sshd
      image: debian
      command: [sh, -c, "mkdir -p -m 755 /run/sshd && exec /usr/sbin/sshd -D -e -f /srv/bench/sshd_config"]
      volumeMounts: [{name: bench, mountPath: /srv/bench}]
  volumes: [{name: bench, hostPath: {path: $TMP}}]
---
apiVersion: v1
kind: Service
metadata: {name: sshd-np}
spec:
  type: NodePort
  selector: {app: sshd}
  ports: [{name: ssh, port: 22, targetPort: 22, nodePort: 30022}]
---
apiVersion: v1
kind: Service
metadata: {name: sshr}
spec:
  selector: {app: sshd}
  ports:
    - {name: pf-http, port: 18080}
    - {name: pf-iperf, port: 15201}
    - {name: np-http, port: 28080}
    - {name: np-iperf, port: 25201}
    - {name: px-http, port: 38080}
    - {name: px-iperf, port: 35201}
---
apiVersion: v1
kind: Pod
metadata: {name: benchclient}
spec:
  containers:
    - name: client
      image: debian
      command: [sleep, "7200"]
      volumeMounts: [{name: bench, mountPath: /srv/bench}]
  volumes: [{name: bench, hostPath: {path: $TMP}}]
EOF
pod_field() { k get pod "$1" -o jsonpath="$2"; }
running() { [ "$(pod_field "$1" '{.status.phase}')" = Running ]; }
wait_for "the sshd pod" 60 running sshd
wait_for "the client pod" 60 running benchclient
SSHD_IP=$(pod_field sshd '{.status.podIP}')
SSHD_NODE=$(pod_field sshd '{.spec.nodeName}')
CLIENT_NODE=$(pod_field benchclient '{.spec.nodeName}')
NODE1_IP=$(k get node node1 -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}' || true)
NODE1_IP=${NODE1_IP:-10.4.7.11}
svc_ip() { k get service "$1" -o jsonpath='{.spec.clusterIP}'; }
PF_IP=$(svc_ip bx-pf)
AG_IP=$(svc_ip bx-ag)
SSHR_IP=$(svc_ip sshr)
wait_for "sshd in its pod" 30 on default/benchclient bash -c "exec 3<>/dev/tcp/$SSHD_IP/22"

# The laptop's side of ssh -R, three ways.
spawn laptop forward kubelan forward pod/sshd 2222:22 -o json
wait_for "the forward" 30 grep -q '"event":"ready"' "$TMP/forward.log"
spawn laptop proxy kubelan proxy --listen 127.0.0.1:1080
wait_for "the proxy" 30 on laptop curl -sf -m 2 -o /dev/null -x http://127.0.0.1:1080 http://web.default.svc.cluster.local/
SSH="env HOME=$TMP ssh -F /dev/null -i $TMP/id_ed25519 -o IdentitiesOnly=yes -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o BatchMode=yes -o ExitOnForwardFailure=yes -o ServerAliveInterval=10 -o LogLevel=ERROR $SSH_OPTS -N"
spawn laptop ssh-pf "$SSH -p 2222 -R 0.0.0.0:18080:127.0.0.1:8080 -R 0.0.0.0:15201:127.0.0.1:5201 root@127.0.0.1"
spawn laptop ssh-np "$SSH -p 30022 -R 0.0.0.0:28080:127.0.0.1:8080 -R 0.0.0.0:25201:127.0.0.1:5201 root@$NODE1_IP"
spawn laptop ssh-proxy "$SSH -o ProxyCommand='socat - PROXY:127.0.0.1:$SSHD_IP:22,proxyport=1080' -R 0.0.0.0:38080:127.0.0.1:8080 -R 0.0.0.0:35201:127.0.0.1:5201 root@$SSHD_IP"
CURL="curl -sf -m 3 -o /dev/null"
wait_for "ssh -R through the forward" 30 on default/benchclient $CURL "http://$SSHR_IP:18080/"
wait_for "ssh -R through the NodePort" 30 on default/benchclient $CURL "http://$SSHR_IP:28080/"
wait_for "ssh -R through the proxy" 30 on default/benchclient $CURL "http://$SSHR_IP:38080/"
wait_for "expose through the port-forward" 30 on default/benchclient $CURL "http://$PF_IP:8080/"
wait_for "expose through the agent" 30 on default/benchclient $CURL "http://$AG_IP:8080/"

echo "client pod on $CLIENT_NODE; relay of bx-pf on $PF_NODE, of bx-ag on $AG_NODE; sshd on $SSHD_NODE" >&2

# CPU per component during the rate test (where the time of a connection goes): the
# processes of a pod (by network namespace: pods share the machine's PID namespace), the
# laptop's processes by PID file (the child of `timeout`, and its children), the lab
# daemon (API server, kubelets, kube-proxies).
netns_pids() { # lab target
  local ino
  ino=$(on "$1" readlink /proc/self/ns/net)
  for d in /proc/[0-9]*; do
    if [ "$(readlink "$d/ns/net" 2>/dev/null)" = "$ino" ]; then echo "${d#/proc/}"; fi
  done | tr '\n' ' '
}
tree_pids() { # pid: it and its descendants
  local p=$1 c
  echo -n "$p "
  for c in $(cat /proc/"$p"/task/*/children 2>/dev/null || true); do tree_pids "$c"; done
}
laptop_pids() { # tag
  local t
  t=$(cat "$TMP/$1.pid")
  for c in $(cat /proc/"$t"/task/*/children 2>/dev/null || true); do tree_pids "$c"; done
}
relay_pod() { # service
  local sel
  sel=$(k get service "$1" -o jsonpath='{.spec.selector.kubelan\.io/session}')
  echo "default/$(k get pods -l "kubelan.io/session=$sel" -o jsonpath='{.items[0].metadata.name}')"
}
AGENT_POD=kubelan-system/$(k get pods -n kubelan-system -o jsonpath='{.items[0].metadata.name}')
DAEMON=$(for d in /proc/[0-9]*; do
  if { tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null | grep -q "lab daemon --name $LAB "; then echo "${d#/proc/}"; fi
done | tr '\n' ' ')
declare -A COMP
COMP[expose-pf]="relay=$(netns_pids "$(relay_pod bx-pf)")|client=$(laptop_pids expose-pf)|labd=$DAEMON"
COMP[expose-ag]="relay=$(netns_pids "$(relay_pod bx-ag)")|client=$(laptop_pids expose-ag)|agent=$(netns_pids "$AGENT_POD")"
SSHD_PIDS=$(netns_pids default/sshd)
COMP[ssh-pf]="sshd=$SSHD_PIDS|ssh=$(laptop_pids ssh-pf)|forward=$(laptop_pids forward)|labd=$DAEMON"
COMP[ssh-proxy]="sshd=$SSHD_PIDS|ssh=$(laptop_pids ssh-proxy)|proxy=$(laptop_pids proxy)|agent=$(netns_pids "$AGENT_POD")"
COMP[ssh-np]="sshd=$SSHD_PIDS|ssh=$(laptop_pids ssh-np)|labd=$DAEMON"
NGINX_PIDS=$(laptop_pids nginx)
for m in "${!COMP[@]}"; do echo "$m: ${COMP[$m]}" >>"$TMP/components"; done
ticks() { # pids...: utime+stime of all
  local p sum=0 f
  for p in "$@"; do
    f=$(cat /proc/"$p"/stat 2>/dev/null) || continue
    f=${f##*) }
    set -- $f
    sum=$((sum + ${12} + ${13}))
  done
  echo $sum
}
cpu_snapshot() { # method: "name ticks" per component, and nginx
  local IFS='|' part
  for part in ${COMP[$1]} "nginx=$NGINX_PIDS"; do
    IFS=' ' read -r -a ps <<<"${part#*=}"
    echo "${part%%=*} $(IFS=' '; ticks "${ps[@]}")"
  done
}
PB=/srv/bench/pbclient
measure() { # method ip http_port iperf_port
  local m=$1 ip=$2 hp=$3 pp=$4 out
  out=$TMP/$m-$r
  on default/benchclient "$PB" lat "$ip" "$hp" --n 200 --max-secs 60 >"$out.lat" || echo '{}' >"$out.lat"
  cpu_snapshot "$m" >"$out.cpu0"
  on default/benchclient "$PB" rate "$ip" "$hp" --n 40000 --secs 5 --conc 8 >"$out.rate" || echo '{}' >"$out.rate"
  cpu_snapshot "$m" >"$out.cpu1"
  sleep 1
  on default/benchclient iperf3 -c "$ip" -p "$pp" -t 5 -J >"$out.up" || echo '{}' >"$out.up"
  sleep 1
  on default/benchclient iperf3 -c "$ip" -p "$pp" -t 5 -R -J >"$out.down" || echo '{}' >"$out.down"
  sleep 1
}
METHODS=(expose-pf ssh-pf expose-ag ssh-proxy ssh-np)
target() {
  case $1 in
    expose-pf) echo "$PF_IP 8080 5201" ;;
    expose-ag) echo "$AG_IP 8080 5201" ;;
    ssh-pf) echo "$SSHR_IP 18080 15201" ;;
    ssh-np) echo "$SSHR_IP 28080 25201" ;;
    ssh-proxy) echo "$SSHR_IP 38080 35201" ;;
  esac
}
for r in $(seq "$ROUNDS"); do
  order=("${METHODS[@]}")
  if [ $((r % 2)) = 0 ]; then
    order=(); for ((i = ${#METHODS[@]} - 1; i >= 0; i--)); do order+=("${METHODS[$i]}"); done
  fi
  for m in "${order[@]}"; do
    echo "round $r/$ROUNDS: $m" >&2
    # shellcheck disable=SC2046
    measure "$m" $(target "$m")
  done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cat "$TMP/components" >&2
for t in expose-pf expose-ag; do
  echo "$t: $(grep -c ' closed: ' "$TMP/$t.log") connections closed, $(grep -c '^link: ' "$TMP/$t.log") link events: $(grep '^link: ' "$TMP/$t.log" | tr '\n' ' ')" >&2
done

python3 - "$TMP" "$ROUNDS" "$(getconf CLK_TCK)" <<'EOF'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return {}
def bps(d):
    return d.get("end", {}).get("sum_received", {}).get("bits_per_second", 0) / 1e9
rows = {}
for m in ["expose-pf", "ssh-pf", "expose-ag", "ssh-proxy", "ssh-np"]:
    v = {"p50": [], "p99": [], "cps": [], "errs": [], "up": [], "down": []}
    for r in range(1, rounds + 1):
        base = f"{tmp}/{m}-{r}"
        lat, rate = load(base + ".lat"), load(base + ".rate")
        v["p50"].append(lat.get("p50_us", 0)); v["p99"].append(lat.get("p99_us", 0))
        v["cps"].append(rate.get("cps", 0)); v["errs"].append(rate.get("errors", 0) + lat.get("errors", 0))
        v["up"].append(bps(load(base + ".up"))); v["down"].append(bps(load(base + ".down")))
    rows[m] = {k: statistics.median(x) for k, x in v.items()}
    rows[m]["errs"] = sum(v["errs"])
    rows[m]["rounds"] = v
print("| method | p50 µs | p99 µs | conn/s (c=8) | pod→laptop Gbit/s | laptop→pod Gbit/s | errors |")
print("|---|---|---|---|---|---|---|")
for m, x in rows.items():
    print(f"| {m} | {x['p50']:.0f} | {x['p99']:.0f} | {x['cps']:.0f} | {x['up']:.2f} | {x['down']:.2f} | {x['errs']} |")
print()
print("| pair | p50 ratio (target ≤ 1) | conn/s ratio (≥ 1.5) | pod→laptop ratio (≥ 1.5) | laptop→pod ratio (≥ 1.5) |")
print("|---|---|---|---|---|")
def mark(ok):
    return "" if ok else " ✗"
for e, s in [("expose-pf", "ssh-pf"), ("expose-ag", "ssh-proxy"), ("expose-ag", "ssh-np")]:
    a, b = rows[e], rows[s]
    p50 = a["p50"] / max(b["p50"], 1)
    cps = a["cps"] / max(b["cps"], 1)
    up = a["up"] / max(b["up"], 1e-9)
    down = a["down"] / max(b["down"], 1e-9)
    print(f"| {e} / {s} | {p50:.2f}{mark(p50 <= 1)} | {cps:.2f}{mark(cps >= 1.5)} | {up:.2f}{mark(up >= 1.5)} | {down:.2f}{mark(down >= 1.5)} |")
print(f"\n({rounds} rounds, medians; ✗ = misses issue 18's target)")
print("\nCPU µs per connection during the rate test, by component (medians; `labd`: the lab daemon — API server, kubelets, kube-proxies; `nginx`: the same server for all):\n")
hz = int(sys.argv[3])
for m in rows:
    per = {}
    for r in range(1, rounds + 1):
        base = f"{tmp}/{m}-{r}"
        try:
            a = dict(l.split() for l in open(base + ".cpu0"))
            b = dict(l.split() for l in open(base + ".cpu1"))
            n = load(base + ".rate").get("ok", 0) or load(base + ".rate").get("conns", 0)
        except Exception:
            continue
        for c in a:
            if n:
                per.setdefault(c, []).append((int(b[c]) - int(a[c])) / hz * 1e6 / n)
    print(f"- {m}: " + ", ".join(f"{c} {statistics.median(v):.0f}" for c, v in per.items())
          + (f"; total {sum(statistics.median(v) for c, v in per.items() if c != 'nginx'):.0f} without nginx" if per else ""))
print("\nPer round (p50 µs / p99 µs / conn/s / pod→laptop / laptop→pod Gbit/s):\n")
for m, x in rows.items():
    v = x["rounds"]
    each = "; ".join(f"{a:.0f} / {b:.0f} / {c:.0f} / {d:.2f} / {e:.2f}"
                     for a, b, c, d, e in zip(v["p50"], v["p99"], v["cps"], v["up"], v["down"]))
    print(f"- {m}: {each}")
EOF
