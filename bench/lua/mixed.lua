-- Target 3's closed loop: 90 % reads (/auth/me, GET /notes, GET /notes/{id}), 10 % writes
-- (create a note, update one). BENCH_TOKEN and BENCH_NOTES (comma-separated ids the token's
-- user owns) come from the environment; bench/scenarios.py sets them.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local token = os.getenv("BENCH_TOKEN")
local notes = {}
for id in string.gmatch(os.getenv("BENCH_NOTES"), "[^,]+") do
    table.insert(notes, id)
end
local read_headers = {["Authorization"] = "Bearer " .. token}
local write_headers = {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
}
local note_body = '{"title": "bench", "body": "<p>written by the bench</p>"}'
local counter = 0

function request()
    counter = counter + 1
    local pick = math.random(100)
    local note = notes[math.random(#notes)]
    if pick <= 30 then
        return wrk.format("GET", "/auth/me", read_headers)
    elseif pick <= 60 then
        return wrk.format("GET", "/notes?limit=10", read_headers)
    elseif pick <= 90 then
        return wrk.format("GET", "/notes/" .. note, read_headers)
    elseif pick <= 95 then
        return wrk.format("POST", "/notes", write_headers, note_body)
    end
    local update = '{"title": "bench ' .. counter .. '"}'
    return wrk.format("PATCH", "/notes/" .. note, write_headers, update)
end
