-- Shared by every wrk run of the bench: counts 5xx answers per thread and prints one JSON
-- line of figures at the end (latencies in microseconds), which bench/wrk.py parses.
-- Scripts that generate their own requests dofile() this one and set `request` after.
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    server_errors = 0
end

function response(status, headers, body)
    if status >= 500 then
        server_errors = server_errors + 1
    end
end

function done(summary, latency, requests)
    local errors = 0
    for _, thread in ipairs(threads) do
        errors = errors + thread:get("server_errors")
    end
    local e = summary.errors
    io.write(string.format(
        'BENCH {"requests": %d, "duration_us": %d, "p50": %d, "p99": %d, "max": %d, '
        .. '"non_2xx_3xx": %d, "server_errors": %d, "socket_errors": %d}\n',
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        latency.max, e.status, errors, e.connect + e.read + e.write + e.timeout))
end
