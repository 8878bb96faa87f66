#!/bin/sh
# Writes rabbitmq.conf from the official image's environment variables, then
# runs the server as the rabbitmq user (PID 1, so `docker stop` reaches it).
set -eu

conf=/etc/rabbitmq/rabbitmq.conf
{
    echo "# Written at start by docker-entrypoint.sh from the environment."
    echo "listeners.tcp.default = 5672"
    echo "management.tcp.port = 15672"
    echo "loopback_users = none"
    if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then echo "default_user = $RABBITMQ_DEFAULT_USER"; fi
    if [ -n "${RABBITMQ_DEFAULT_PASS:-}" ]; then echo "default_pass = $RABBITMQ_DEFAULT_PASS"; fi
    if [ -n "${RABBITMQ_DEFAULT_VHOST:-}" ]; then echo "default_vhost = $RABBITMQ_DEFAULT_VHOST"; fi
} > "$conf"
chown rabbitmq:rabbitmq "$conf"

if [ "$1" = rabbitmq-server ]; then
    # A fresh volume may belong to root.
    chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
    shift
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
        /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
fi
exec "$@"
