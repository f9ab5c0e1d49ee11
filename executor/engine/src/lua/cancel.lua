-- Cancels a run: no new step starts, running steps finish. Returns the run phase.
local phase = mget('phase')
if not phase then return {'missing'} end
if is_terminal_run(phase) then return {phase} end
local now = now_ms()
redis.call('HSET', META, 'cancel', '1')
event('cancel', '', phase, '')
skip_all_waiting(now)
return {settle(now)}
