#!/bin/sh
# Keep one CPU for weft-kv's loop, as far as a running Linux lets root do it
# without a reboot (no isolcpus / nohz_full / rcu_nocbs), and put it all back.
#
#   bench/host-tune.sh apply [LOOP_CPU]   (default CPU 0)
#   bench/host-tune.sh revert
#   bench/host-tune.sh show
#
# apply (root only) saves what it changes in $HOST_TUNE_STATE
# (default /tmp/weft-host-tune.state) and then:
#   - lifts the real-time throttle (kernel.sched_rt_runtime_us = -1), so a
#     SCHED_FIFO loop that is busy for more than 95% of a second is not held
#     off its CPU for the rest of it;
#   - moves every interrupt that can move (/proc/irq/N/smp_affinity_list)
#     and the unbound workqueues (/sys/devices/virtual/workqueue/cpumask)
#     to the other CPUs;
#   - moves every thread of every process, and every kernel thread that
#     allows it, to the other CPUs (taskset), so only what is placed there
#     afterwards (weft-kv --loop-cpus LOOP_CPU) runs on LOOP_CPU.
# What cannot move stays: per-CPU kernel threads (ksoftirqd/N, kworker/N,
# migration/N, rcu), the local timer tick, and the hypervisor's steal.
# revert restores every saved value; a process started after apply keeps
# the narrowed CPUs it inherited (start it again after revert).
#
# Then run the placed real-time row, e.g.
#   bench/kv-load.sh --only none --client-cpus 1 \
#     --extra 'weft-kv-l0-d1-fifo=--loops 1 --loop-cpus 0 --db-cpus 1 --loop-fifo 1'
set -eu
state=${HOST_TUNE_STATE:-/tmp/weft-host-tune.state}
rt=/proc/sys/kernel/sched_rt_runtime_us
wq=/sys/devices/virtual/workqueue/cpumask

# The online CPUs other than $1, as a list (taskset -c, smp_affinity_list)
# and as a hex mask (workqueue cpumask).
others_list() {
    online=$(cat /sys/devices/system/cpu/online)
    out=
    for part in $(echo "$online" | tr ',' ' '); do
        lo=${part%-*}
        hi=${part#*-}
        c=$lo
        while [ "$c" -le "$hi" ]; do
            [ "$c" -ne "$1" ] && out="${out:+$out,}$c"
            c=$((c + 1))
        done
    done
    echo "$out"
}

others_mask() {
    mask=0
    for c in $(echo "$1" | tr ',' ' '); do
        mask=$((mask | (1 << c)))
    done
    printf '%x\n' "$mask"
}

show() {
    echo "sched_rt_runtime_us: $(cat $rt)"
    [ -w "$wq" ] && echo "workqueue cpumask: $(cat $wq)"
    echo "interrupts (the CPUs each may run on):"
    for f in /proc/irq/*/smp_affinity_list; do
        n=${f#/proc/irq/}
        n=${n%/smp_affinity_list}
        echo "  irq $n: $(cat "$f")"
    done
    echo "threads per allowed-CPU list:"
    for s in /proc/[0-9]*/task/[0-9]*/status; do
        sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "$s" 2>/dev/null
    done | sort | uniq -c | sed 's/^/  /'
}

apply() {
    loop=${1:-0}
    [ "$(id -u)" -eq 0 ] || { echo "host-tune: apply needs root" >&2; exit 1; }
    [ -e "$state" ] && { echo "host-tune: $state exists: revert first" >&2; exit 1; }
    [ -d "/sys/devices/system/cpu/cpu$loop" ] || { echo "host-tune: no CPU $loop" >&2; exit 1; }
    others=$(others_list "$loop")
    [ -n "$others" ] || { echo "host-tune: CPU $loop is the only CPU" >&2; exit 1; }
    : > "$state"
    echo "rt $(cat $rt)" >> "$state"
    echo -1 > $rt
    if [ -w "$wq" ]; then
        echo "wq $(cat $wq)" >> "$state"
        others_mask "$others" > "$wq" || echo "host-tune: workqueue cpumask refused" >&2
    fi
    irqs=0
    irqs_kept=0
    for f in /proc/irq/*/smp_affinity_list; do
        old=$(cat "$f")
        if echo "$others" > "$f" 2>/dev/null; then
            echo "irq $f $old" >> "$state"
            irqs=$((irqs + 1))
        else
            irqs_kept=$((irqs_kept + 1))
        fi
    done
    moved=0
    kept=0
    for t in /proc/[0-9]*/task/[0-9]*; do
        tid=${t##*/}
        old=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "$t/status" 2>/dev/null) || continue
        [ -n "$old" ] || continue
        if taskset -p -c "$others" "$tid" > /dev/null 2>&1; then
            echo "task $tid $old" >> "$state"
            moved=$((moved + 1))
        else
            kept=$((kept + 1))
        fi
    done
    echo "host-tune: CPU $loop kept for the loop; others: $others"
    echo "  sched_rt_runtime_us -1; interrupts moved $irqs (kept $irqs_kept);" \
        "threads moved $moved (kept $kept: per-CPU kernel threads and exited ones)"
    echo "  saved in $state; undo with: bench/host-tune.sh revert"
}

revert() {
    [ -e "$state" ] || { echo "host-tune: nothing to revert ($state absent)" >&2; exit 1; }
    while read -r kind a b; do
        case $kind in
            rt) echo "$a" > $rt ;;
            wq) echo "$a" > "$wq" || true ;;
            irq) echo "$b" > "$a" 2>/dev/null || true ;;
            task) taskset -p -c "$b" "$a" > /dev/null 2>&1 || true ;;
        esac
    done < "$state"
    rm -f "$state"
    echo "host-tune: reverted (sched_rt_runtime_us $(cat $rt))"
}

case ${1:-} in
    apply) apply "${2:-0}" ;;
    revert) revert ;;
    show) show ;;
    *) echo "usage: bench/host-tune.sh apply [LOOP_CPU] | revert | show" >&2; exit 2 ;;
esac
