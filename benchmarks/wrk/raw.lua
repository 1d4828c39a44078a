-- The picture as the raw request body (Content-Type: its media type): no multipart parsing.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local data, media = read_picture()
wrk.method = "POST"
wrk.body = data
wrk.headers["Content-Type"] = media
