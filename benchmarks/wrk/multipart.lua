-- The picture as a multipart/form-data upload in field "file", as a browser form sends it.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local data, media = read_picture()
local boundary = "----convscopeBenchBoundary7MA4YWxkTrZu0gW"
wrk.method = "POST"
wrk.body = "--" .. boundary .. "\r\n"
  .. 'Content-Disposition: form-data; name="file"; filename="picture"\r\n'
  .. "Content-Type: " .. media .. "\r\n\r\n"
  .. data .. "\r\n--" .. boundary .. "--\r\n"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
