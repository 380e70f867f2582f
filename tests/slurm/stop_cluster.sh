#!/usr/bin/env bash
# Stops the test cluster of start_cluster.sh (its daemons; munged stays for other users).
pkill -x slurmd || true
pkill -x slurmctld || true
