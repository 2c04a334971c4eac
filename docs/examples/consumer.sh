#!/usr/bin/env bash
# consumer.sh: a complete ledgerd consumer in shell, using only curl and jq.
#
# It registers a consumer, creates one shape, reads the change stream,
# applies each transaction (here: prints its changes, one JSON object a line,
# on standard output), acks it once applied, answers challenges, creates its
# shape again after an eviction, registers again when its lease is gone,
# reconnects when the stream is cut, and releases its consumer on SIGTERM or
# SIGINT. docs/api.md explains each call; cmd/ledgerd's end-to-end tests run
# this script against a real daemon and Postgres.
#
# Environment:
#   LEDGERD_URL         the daemon (default http://127.0.0.1:7070)
#   LEDGERD_TOKEN       the bearer token of ledgerd's -token-file, if any
#   LEDGERD_TOKEN_FILE  or a file holding it
#   TABLE               the shape's table, "schema.table" (required)
#   FILTER              the shape's filter, a JSON object such as
#                       '{"tenant":["a","b"]}' (default: none, every row)
#   CONSUMER_ID         default "sh-<host>-<pid>"
#   SHAPE_ID            default "<CONSUMER_ID>-<table>"
#   TTL_MS              the lease's TTL in milliseconds (default 30000)
#
# Output: for each change, {"lsn","op","table","new","old"} on one line.
# Replace apply() with what your service does with a transaction.

set -euo pipefail

url=${LEDGERD_URL:-http://127.0.0.1:7070}
url=${url%/}
token=${LEDGERD_TOKEN:-}
if [[ -z $token && -n ${LEDGERD_TOKEN_FILE:-} ]]; then
	token=$(tr -d '[:space:]' <"$LEDGERD_TOKEN_FILE")
fi
table=${TABLE:?set TABLE to the table of the shape, e.g. public.orders}
filter=${FILTER:-}
host=$(hostname)
id=${CONSUMER_ID:-sh-$host-$$}
shape=${SHAPE_ID:-$id-${table//[^A-Za-z0-9._:-]/_}}
ttl_ms=${TTL_MS:-30000}

lease=""
status=""
body=""
stream_pid=""
buffer=$(mktemp)
trap 'rm -f "$buffer"' EXIT

log() { echo "consumer.sh: $*" >&2; }

# call METHOD PATH [BODY] sets status and body. The lease goes along when
# the consumer holds one; it is what proves a call acts on its own resources.
call() {
	local method=$1 path=$2 data=${3:-}
	local args=(-sS -X "$method" -H 'Content-Type: application/json' -w '\n%{http_code}')
	[[ -n $token ]] && args+=(-H "Authorization: Bearer $token")
	[[ -n $lease ]] && args+=(-H "Ledger-Lease: $lease")
	[[ -n $data ]] && args+=(--data-binary "$data")
	local out
	out=$(curl "${args[@]}" "$url$path") || { status=000; body=""; return 0; }
	status=${out##*$'\n'}
	body=${out%$'\n'*}
}

# register gets a new lease. A previous run's lease on the same id (409
# consumer_exists) runs out within its TTL, so it waits and retries.
register() {
	lease=""
	local req
	req=$(jq -cn --arg id "$id" --argjson ttl "$ttl_ms" --argjson pid $$ --arg host "$host" \
		'{id: $id, ttl_ms: $ttl, pid: $pid, host: $host}')
	while :; do
		call POST /v1/consumers "$req"
		case $status in
		201)
			lease=$(jq -r .lease <<<"$body")
			log "registered $id"
			return
			;;
		409 | 429 | 503 | 000) log "register: $status $body; retrying" ;;
		*)
			log "register: $status $body"
			exit 1
			;;
		esac
		sleep 1
	done
}

# put_shape creates the shape (201), or finds it as it was (200). An evicted
# shape is created again with a higher generation; a real consumer reloads
# the shape's rows from the table first, since it missed what the shape
# received while evicted.
put_shape() {
	local req
	req=$(jq -cn --arg c "$id" --arg t "$table" --arg f "$filter" \
		'{consumer: $c, table: $t} + (if $f == "" then {} else {filter: ($f | fromjson)} end)')
	call PUT "/v1/shapes/$shape" "$req"
	case $status in
	200 | 201)
		log "shape $shape generation $(jq -r .generation <<<"$body") from $(jq -r .start_lsn <<<"$body")"
		jq -r '.warnings[]? | "consumer.sh: warning: " + .' <<<"$body" >&2
		;;
	403 | 404 | 410) return 1 ;; # the lease is gone: register again
	*)
		log "put shape: $status $body"
		exit 1
		;;
	esac
}

# apply does the work of one transaction: its changes, in order. It must be
# idempotent per commit LSN: a transaction is delivered again until its ack
# is answered.
apply() {
	local lsn=$1
	jq -c --arg lsn "$lsn" '{lsn: $lsn, op, table, new, old}' "$buffer"
}

# ack tells ledgerd that every transaction up to lsn is applied; the 200
# answer means the ack is durable, and nothing up to lsn comes again.
ack() {
	call POST "/v1/consumers/$id/ack" "{\"lsn\":\"$1\"}"
	case $status in
	200) jq -r '.gone | to_entries[] | "consumer.sh: shape \(.key) is gone: \(.value)"' <<<"$body" >&2 ;;
	*) log "ack $1: $status $body" ;; # the stream will resend it
	esac
}

# frame handles one line of the change stream.
frame() {
	local line=$1 type
	type=$(jq -r '.type // empty' <<<"$line")
	case $type in
	txn)
		local lsn part last
		read -r lsn part last < <(jq -r '[.lsn, (.part // 0), (.last // false)] | @tsv' <<<"$line")
		# A large transaction comes in parts of the same lsn, from 1, the
		# final one with last: true. A cut stream sends it again from part
		# 1: start the buffer over there, apply and ack after the last.
		if ((part <= 1)); then
			: >"$buffer"
		fi
		jq -c '.changes[]' <<<"$line" >>"$buffer"
		if ((part == 0)) || [[ $last == true ]]; then
			apply "$lsn"
			ack "$lsn"
		fi
		;;
	keepalive) ;;
	challenge)
		# The shape has been pending a while without an ack. Transactions
		# are acked as soon as they are applied, so it is still working:
		# say so, or it is evicted as stalled.
		call POST "/v1/consumers/$id/ack" "$(jq -cn --arg s "$(jq -r .shape <<<"$line")" '{defer: [$s]}')"
		;;
	evicted)
		log "shape $(jq -r .shape <<<"$line") evicted: $(jq -r .reason <<<"$line")"
		put_shape || true
		;;
	"")
		# Not a frame: the error answer of the stream call.
		log "stream: $line"
		case $(jq -r '.error // empty' <<<"$line" 2>/dev/null) in
		lease_gone | wrong_lease | consumer_not_found) lease="" ;;
		esac
		;;
	esac
}

release() {
	trap - TERM INT
	[[ -n $stream_pid ]] && kill "$stream_pid" 2>/dev/null
	if [[ -n $lease ]]; then
		call DELETE "/v1/consumers/$id"
		log "released $id: $status"
	fi
	exit 0
}
trap release TERM INT

stream_args=(-sS -N --fail-with-body)
[[ -n $token ]] && stream_args+=(-H "Authorization: Bearer $token")

while :; do
	if [[ -z $lease ]]; then
		register
	fi
	put_shape || {
		lease=""
		continue
	}
	# The open stream holds the lease: no heartbeat is needed while it runs.
	exec 3< <(exec curl "${stream_args[@]}" -H "Ledger-Lease: $lease" "$url/v1/consumers/$id/stream" 2>/dev/null)
	stream_pid=$!
	while IFS= read -r line <&3; do
		frame "$line"
	done
	exec 3<&-
	stream_pid=""
	log "stream ended; reconnecting"
	sleep 1
done
