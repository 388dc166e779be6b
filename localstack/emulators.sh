# shellcheck shell=bash
# Shared functions of localstack/start, localstack/stop and localstack/test: starting the
# S3, GCS and Azure Blob Storage emulators on loopback, waiting for them, creating the test buckets, and
# stopping exactly the processes that were started. Sourced, not run.
#
# A run directory holds everything about one set of emulators:
#   pids                 one line per started process group: "name pid starttime"
#   env                  the variables the tests read, as `export` lines
#   s3.log, gcs.log, azure.log   the emulators' output
#   localstack-fs/       LocalStack's FILESYSTEM_ROOT

# The script directory, the install cache and the defaults every script shares.
# shellcheck disable=SC2034 # used by the scripts that source this file
cairn_emulators_home="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cairn_cache_dir="${CAIRN_EMULATORS_DIR:-$HOME/.cache/cairn-emulators}"
cairn_s3_emulator="${CAIRN_S3_EMULATOR:-localstack}"
cairn_s3_bucket="${CAIRN_TEST_S3_BUCKET:-cairn-test}"
cairn_gcs_bucket="${CAIRN_TEST_GCS_BUCKET:-cairntest}" # no '-': fake-gcs-server dislikes it
cairn_azure_container="${CAIRN_TEST_AZURE_CONTAINER:-cairn-test}"
# Azurite's well-known development account (public, documented by Microsoft).
cairn_azure_account=devstoreaccount1
cairn_azure_key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
cairn_start_timeout="${CAIRN_EMULATOR_START_TIMEOUT:-90}"
cairn_stop_timeout="${CAIRN_EMULATOR_STOP_TIMEOUT:-15}"

say() { echo "cairn: $*" >&2; }

# Prints N distinct free TCP ports on 127.0.0.1. All sockets stay bound until every port
# is chosen, so the N are distinct; another process may still take one before the
# emulator binds it, which the readiness check then reports.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# The kernel's start time of a process (field 22 of /proc/PID/stat), which tells a
# process apart from a later one that reuses its PID. Empty if the process is gone.
start_time() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) } # the command name may hold spaces; fields resume after its ')'
  # shellcheck disable=SC2086 # split into fields on purpose
  set -- $stat
  echo "${20}"
}

# True if the process group has a live (non-zombie) member.
group_alive() {
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

# launch RUN_DIR NAME LOG COMMAND...: starts COMMAND in a new session, hence its own
# process group (pgid = pid), detached from the terminal so a Ctrl-C meant for the tests
# does not reach it, with its output in LOG. Records "NAME PID STARTTIME" in RUN_DIR/pids
# and sets LAUNCHED_PID.
launch() {
  local run_dir=$1 name=$2 log=$3
  shift 3
  # From a script (no job control) the background child is never a group leader, so
  # setsid execs the command in place and $! is the emulator itself.
  setsid "$@" </dev/null >"$log" 2>&1 &
  LAUNCHED_PID=$!
  disown "$LAUNCHED_PID" # no "Killed" job notices from this shell when it is stopped
  local stime
  stime=$(start_time "$LAUNCHED_PID")
  echo "$name $LAUNCHED_PID ${stime:-0}" >>"$run_dir/pids"
}

# start_s3 RUN_DIR PORT: starts the chosen S3 emulator; sets LAUNCHED_PID.
start_s3() {
  local run_dir=$1 port=$2
  case "$cairn_s3_emulator" in
    localstack)
      mkdir -p "$run_dir/localstack-fs"
      # Loopback only: DNS_ADDRESS=0, else LocalStack serves DNS on 0.0.0.0:53; and the
      # gateway through localstack_loopback.py (which runs localstack.runtime.main), as
      # LocalStack's HTTP server otherwise listens on 0.0.0.0 whatever GATEWAY_LISTEN says.
      # The AWS_* variables are the tests', not LocalStack's.
      launch "$run_dir" s3 "$run_dir/s3.log" \
        env -u AWS_ENDPOINT_URL -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY \
        SERVICES=s3 EAGER_SERVICE_LOADING=1 \
        GATEWAY_LISTEN="127.0.0.1:$port" LOCALSTACK_HOST="127.0.0.1:$port" \
        DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 DNS_ADDRESS=0 \
        FILESYSTEM_ROOT="$run_dir/localstack-fs" \
        "$cairn_cache_dir/localstack-venv/bin/python" "$cairn_emulators_home/localstack_loopback.py"
      ;;
    moto)
      launch "$run_dir" s3 "$run_dir/s3.log" \
        "$cairn_cache_dir/moto-venv/bin/moto_server" -H 127.0.0.1 -p "$port"
      ;;
    *)
      say "unknown CAIRN_S3_EMULATOR '$cairn_s3_emulator' (localstack or moto)"
      return 2
      ;;
  esac
}

# The fake-gcs-server binary inside the PyPI wrapper package.
fakegcs_binary() {
  find "$cairn_cache_dir/fakegcs-venv" -type f -name 'fake-gcs-server-linux-*' -perm -u+x 2>/dev/null | head -n1
}

# start_gcs RUN_DIR PORT: starts fake-gcs-server; sets LAUNCHED_PID.
start_gcs() {
  local run_dir=$1 port=$2 binary
  binary=$(fakegcs_binary)
  if [ -z "$binary" ]; then
    say "fake-gcs-server is not installed in $cairn_cache_dir (run localstack/install)"
    return 1
  fi
  launch "$run_dir" gcs "$run_dir/gcs.log" \
    "$binary" -scheme http -host 127.0.0.1 -port "$port" -backend memory \
    -external-url "http://127.0.0.1:$port" -public-host "127.0.0.1:$port"
}

# The Azurite blob server inside the npm package installed by localstack/install.
azurite_binary() {
  local b="$cairn_cache_dir/azurite/node_modules/azurite/dist/src/blob/main.js"
  [ -f "$b" ] && echo "$b"
}

# start_azure RUN_DIR PORT: starts Azurite's blob service, blobs in memory; sets
# LAUNCHED_PID.
start_azure() {
  local run_dir=$1 port=$2 main
  main=$(azurite_binary) || main=""
  if [ -z "$main" ] || ! command -v node >/dev/null 2>&1; then
    say "Azurite (or node) is not installed in $cairn_cache_dir (run localstack/install azure)"
    return 1
  fi
  # In memory; started in the run directory, where Azurite would write any file.
  launch "$run_dir" azure "$run_dir/azure.log" env -C "$run_dir" \
    node "$main" --blobHost 127.0.0.1 --blobPort "$port" \
    --inMemoryPersistence --disableTelemetry --skipApiVersionCheck
}

# Readiness probes: s3_ready URL LOG, gcs_ready URL, azure_ready URL.
s3_ready() {
  if [ "$cairn_s3_emulator" = localstack ]; then
    # Health says "available" once S3 is loaded ("running" once it served a request);
    # "Ready." in the log, LocalStack's own marker, follows within a moment. Both are
    # awaited: a runtime stopped before its marker was seen to hang in its shutdown.
    curl -fsS --max-time 2 "$1/_localstack/health" 2>/dev/null |
      grep -Eq '"s3": *"(available|running)"' &&
      grep -qx 'Ready\.' "$2"
  else
    curl -fsS --max-time 2 -o /dev/null "$1/" 2>/dev/null # moto: ListBuckets
  fi
}
gcs_ready() {
  curl -fsS --max-time 2 -o /dev/null "$1/storage/v1/b" 2>/dev/null
}
azure_ready() {
  # Any HTTP answer (an unsigned listing gets 403) means the blob service listens.
  local code
  code=$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "$1/$cairn_azure_account?comp=list" 2>/dev/null) || code=000
  [ "$code" != 000 ]
}

# wait_ready NAME PID PROBE ARGS...: polls PROBE ARGS until it succeeds, the process dies,
# or the start timeout passes.
wait_ready() {
  local name=$1 pid=$2 deadline=$((SECONDS + cairn_start_timeout))
  shift 2
  while ! "$@"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "the $name emulator (pid $pid) exited before it was ready"
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "the $name emulator at $2 was not ready after ${cairn_start_timeout}s"
      return 1
    fi
    sleep 0.2
  done
}

# An endpoint as curl wants it: STORAGE_EMULATOR_HOST may be given without a scheme.
with_scheme() {
  case "$1" in
    http://* | https://*) echo "${1%/}" ;;
    *) echo "http://${1%/}" ;;
  esac
}

# ensure_s3_bucket URL BUCKET: creates the bucket unless it exists. Unsigned requests,
# which the emulators accept.
ensure_s3_bucket() {
  local url=$1 bucket=$2 code
  code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -I "$url/$bucket") || code=000
  [ "$code" = 200 ] && return 0
  code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -X PUT "$url/$bucket") || code=000
  case "$code" in
    200 | 409) return 0 ;; # 409: BucketAlreadyOwnedByYou, created meanwhile
    *)
      say "could not create S3 bucket '$bucket' at $url (HTTP $code)"
      return 1
      ;;
  esac
}

# ensure_gcs_bucket URL BUCKET: creates the bucket through the JSON API unless it exists.
ensure_gcs_bucket() {
  local url=$1 bucket=$2 code
  code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "$url/storage/v1/b/$bucket") || code=000
  [ "$code" = 200 ] && return 0
  code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -X POST \
    -H 'Content-Type: application/json' --data "{\"name\":\"$bucket\"}" \
    "$url/storage/v1/b?project=test") || code=000
  case "$code" in
    200 | 409) return 0 ;;
    *)
      say "could not create GCS bucket '$bucket' at $url (HTTP $code)"
      return 1
      ;;
  esac
}

# ensure_azure_container URL CONTAINER: creates the container unless it exists, with a
# Shared Key signed Create Container request for the development account.
ensure_azure_container() {
  python3 - "$1" "$2" "$cairn_azure_account" "$cairn_azure_key" <<'EOF' || {
import base64, hashlib, hmac, sys, urllib.error, urllib.request
from email.utils import formatdate
url, container, account, key = sys.argv[1:]
date, version = formatdate(usegmt=True), "2021-08-06"
to_sign = "\n".join(["PUT"] + [""] * 11 + [
    f"x-ms-date:{date}", f"x-ms-version:{version}",
    f"/{account}/{account}/{container}\nrestype:container"])
signature = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
request = urllib.request.Request(
    f"{url}/{account}/{container}?restype=container", method="PUT",
    headers={"x-ms-date": date, "x-ms-version": version, "Content-Length": "0",
             "Authorization": f"SharedKey {account}:{signature}"})
try:
    urllib.request.urlopen(request, timeout=10)
except urllib.error.HTTPError as e:
    if e.code != 409:  # ContainerAlreadyExists
        print(f"HTTP {e.code}: {e.read()[:300]!r}", file=sys.stderr)
        sys.exit(1)
EOF
    say "could not create Azure container '$2' at $1"
    return 1
  }
}

# Prints an `export NAME=VALUE` line, the value quoted for the shell.
export_line() {
  printf 'export %s=%q\n' "$1" "$2"
}

# s3_env URL [PID] / gcs_env URL [PID]: the variables the tests read, for one service.
# Credentials and region the environment already names are kept (they matter for an
# endpoint someone else runs); the emulators accept any, so they default to "test".
s3_env() {
  export_line AWS_ENDPOINT_URL "$1"
  export_line AWS_ACCESS_KEY_ID "${AWS_ACCESS_KEY_ID:-test}"
  export_line AWS_SECRET_ACCESS_KEY "${AWS_SECRET_ACCESS_KEY:-test}"
  export_line AWS_REGION "${AWS_REGION:-us-east-1}"
  export_line AWS_ALLOW_HTTP true # object_store refuses http:// endpoints without it
  export_line CAIRN_TEST_S3_BUCKET "$cairn_s3_bucket"
  if [ -n "${2:-}" ]; then
    export_line CAIRN_S3_EMULATOR "$cairn_s3_emulator"
    export_line CAIRN_S3_EMULATOR_PID "$2"
  fi
}
gcs_env() {
  export_line STORAGE_EMULATOR_HOST "$1"
  export_line CAIRN_TEST_GCS_BUCKET "$cairn_gcs_bucket"
  [ -z "${2:-}" ] || export_line CAIRN_GCS_EMULATOR_PID "$2"
}

azure_env() {
  export_line AZURE_STORAGE_USE_EMULATOR true
  export_line AZURITE_BLOB_STORAGE_URL "$1"
  export_line CAIRN_TEST_AZURE_CONTAINER "$cairn_azure_container"
  [ -z "${2:-}" ] || export_line CAIRN_AZURE_EMULATOR_PID "$2"
}

# True while the process PID with kernel start time STIME runs (a zombie does not count).
process_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  # shellcheck disable=SC2086 # split into fields on purpose
  set -- "$2" $stat
  [ "$2" != Z ] && [ "${21}" = "$1" ]
}

# stop_run RUN_DIR: stops the process groups recorded in RUN_DIR/pids — SIGTERM, then
# SIGKILL after the stop timeout — and nothing else. A recorded PID whose process now has
# another start time belongs to someone else and is left alone; a group whose leader is
# gone but whose members live is still ours (Linux does not reuse a PID that is a live
# group's ID).
stop_run() {
  local run_dir=$1 name pid stime groups=() names=() i deadline
  [ -f "$run_dir/pids" ] || return 0
  while read -r name pid stime; do
    [ -n "$pid" ] || continue
    if [ -d "/proc/$pid" ] && [ "$(start_time "$pid")" != "$stime" ]; then
      say "pid $pid ($name) is no longer the process started here; leaving it alone"
      continue
    fi
    if group_alive "$pid"; then
      kill -TERM -- "-$pid" 2>/dev/null || true
      groups+=("$pid")
      names+=("$name")
    fi
  done <"$run_dir/pids"
  [ "${#groups[@]}" -gt 0 ] || return 0

  deadline=$((SECONDS + cairn_stop_timeout))
  for i in "${!groups[@]}"; do
    while group_alive "${groups[i]}" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if group_alive "${groups[i]}"; then
      say "the ${names[i]} emulator (process group ${groups[i]}) did not stop ${cairn_stop_timeout}s after SIGTERM; sending SIGKILL"
      kill -KILL -- "-${groups[i]}" 2>/dev/null || true
    fi
  done
  : >"$run_dir/pids"
}

# tail_logs RUN_DIR: the end of each emulator's log, for a failed start or test run.
tail_logs() {
  local log lines="${CAIRN_LOG_TAIL_LINES:-40}"
  for log in "$1"/s3.log "$1"/gcs.log "$1"/azure.log; do
    [ -s "$log" ] || continue
    echo "----- last $lines lines of $log -----" >&2
    tail -n "$lines" "$log" >&2
  done
}
