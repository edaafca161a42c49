// The sandbox ("pause") image's one binary, built here because no registry is reachable (tools/cluster/build.sh).
module asr-platform/tools/cluster/pause

go 1.26.0
