! tests/fortran: the Fortran module metricq against a real broker and a
! local manager, run by the Go harness (tests/fortran/harness, tests/harness).
!
! It announces on stdout, in the protocol of tests/c/check.h, what the sink
! must receive ("@@ point", "@@ seq", "@@ chunks") and asks for config
! pushes ("@@ config TOKEN JSON", answered on stdin); "@@ done" ends it.
! Failures go to stderr; the exit status is 1 if there were any.
!
! Environment: METRICQ_TEST_URL, METRICQ_TEST_REFUSED_URL (a port nobody
! listens on, password with "s3cret"), METRICQ_TEST_PROXY_URL (the broker
! through a proxy that "@@ cut" takes away).
module ftest_support
    use metricq
    use, intrinsic :: iso_fortran_env, only: output_unit, error_unit
    implicit none

    integer :: failures = 0
    integer :: config_calls = 0
    integer :: update_rounds = 0
    integer :: log_lines = 0
    logical :: log_password = .false.
    integer(int64) :: t0

contains

    subroutine check(ok, what)
        logical, intent(in) :: ok
        character(len=*), intent(in) :: what
        if (.not. ok) then
            failures = failures + 1
            write (error_unit, '(a,a,a,a)') "FAIL: ", what, "; last error: ", mq_last_error()
        end if
    end subroutine check

    ! A status must be want.
    subroutine expect(want, got, what)
        integer, intent(in) :: want, got
        character(len=*), intent(in) :: what
        if (got /= want) then
            failures = failures + 1
            write (error_unit, '(a,a,a,i0,a,a,a,i0,a,a)') "FAIL: ", what, " = ", got, " (", mq_strerror(got), &
                "), want ", want, "; last error: ", mq_last_error()
        end if
    end subroutine expect

    subroutine say(line)
        character(len=*), intent(in) :: line
        write (output_unit, '(a,a)') "@@ ", line
        flush (output_unit)
    end subroutine say

    function istr(i) result(s)
        integer(int64), intent(in) :: i
        character(len=:), allocatable :: s
        character(len=32) :: buf
        write (buf, '(i0)') i
        s = trim(buf)
    end function istr

    function rstr(x) result(s)
        real(real64), intent(in) :: x
        character(len=:), allocatable :: s
        character(len=40) :: buf
        write (buf, '(es25.17e3)') x
        s = trim(adjustl(buf))
    end function rstr

    subroutine expect_seq(metric, n, start, dt, v0, dv)
        character(len=*), intent(in) :: metric
        integer(int64), intent(in) :: n, start, dt
        real(real64), intent(in) :: v0, dv
        call say("seq "//metric//" "//istr(n)//" "//istr(start)//" "//istr(dt)//" "//rstr(v0)//" "//rstr(dv))
    end subroutine expect_seq

    function push_config(token, json) result(answer)
        character(len=*), intent(in) :: token, json
        character(len=:), allocatable :: answer
        character(len=1024) :: line
        call say("config "//token//" "//json)
        read (*, '(a)') line
        answer = trim(line)
    end function push_config

    ! Asks the harness for something ("discover TOKEN", "cut"); its answer.
    function request(what) result(answer)
        character(len=*), intent(in) :: what
        character(len=:), allocatable :: answer
        character(len=1024) :: line
        call say(what)
        read (*, '(a)') line
        answer = trim(line)
    end function request

    function getenv_or_stop(name) result(v)
        character(len=*), intent(in) :: name
        character(len=:), allocatable :: v
        integer :: n, stat
        call get_environment_variable(name, length=n, status=stat)
        if (stat /= 0 .or. n == 0) then
            write (error_unit, '(a,a)') name, " is not set"
            error stop 2
        end if
        allocate (character(len=n) :: v)
        call get_environment_variable(name, v)
    end function getenv_or_stop

    ! The configuration handler: counts calls, declares a metric, refuses
    ! configurations without "rate".
    function on_config(src, config_json, user) result(rc) bind(C)
        type(c_ptr), value :: src, config_json, user
        integer(c_int) :: rc
        character(len=:), allocatable :: config
        config_calls = config_calls + 1
        config = mq_c_string(config_json)
        rc = 1
        if (index(config, '"rate"') == 0) return
        if (mq_source_declare(src, "ftest.config.value") /= MQ_OK) return
        rc = 0
        if (c_associated(user)) rc = 1
    end function on_config

    ! The interval update: sends the round number, stops after 4 rounds.
    function on_update(src, user) result(rc) bind(C)
        type(c_ptr), value :: src, user
        integer(c_int) :: rc
        rc = 0
        if (c_associated(user)) rc = 1
        if (mq_source_send(src, "ftest.interval", t0 + update_rounds * 1000_int64, &
                           real(update_rounds, real64)) /= MQ_OK) rc = 2
        update_rounds = update_rounds + 1
        if (update_rounds >= 4) rc = 1
    end function on_update

    subroutine on_log(level, message, user) bind(C)
        integer(c_int), value :: level
        type(c_ptr), value :: message, user
        character(len=:), allocatable :: text
        text = mq_c_string(message)
        if (level >= MQ_LOG_WARN .and. index(text, "ftest-interval") > 0) log_lines = log_lines + 1
        if (index(text, "s3cret") > 0) log_password = .true.
        if (c_associated(user)) log_lines = -1000
    end subroutine on_log

end module ftest_support

program test_metricq
    use metricq
    use ftest_support
    implicit none

    character(len=:), allocatable :: url, refused, config, text
    character(len=32) :: padded
    type(c_ptr) :: src, bad, handle, batch_handle
    type(mq_stats) :: st
    integer :: rc, i
    integer(int64) :: times(10), one_time(1)
    real(real64) :: values(10), one_value(1), two_values(2)
    integer(int64), allocatable :: no_times(:)
    real(real64), allocatable :: no_values(:)

    url = getenv_or_stop("METRICQ_TEST_URL")
    refused = getenv_or_stop("METRICQ_TEST_REFUSED_URL")
    t0 = (mq_now() / 1000000000_int64 - 3600_int64) * 1000000000_int64

    ! ---- basics, errors without a broker
    write (error_unit, '(a)') "== basics"
    call check(mq_version() == "libmetricq/"//MQ_VERSION_STRING, "mq_version() = "//mq_version())
    call check(len(mq_strerror(MQ_ERR_ORDER)) > 0, "mq_strerror")
    call check(mq_now() > 1600000000000000000_int64, "mq_now")
    bad = mq_source_new("no scheme", "ftest-x", 1.0_real64)
    call check(.not. c_associated(bad), "mq_source_new with a bad URL")
    call check(len(mq_last_error()) > 0, "no last error after a bad URL")
    bad = mq_source_new(refused, "ftest-refused", 5.0_real64)
    call check(.not. c_associated(bad), "mq_source_new to a refused port")
    call check(index(mq_last_error(), "s3cret") == 0, "password in the last error")
    bad = mq_source_create(refused, "ftest-refused")
    call check(c_associated(bad), "mq_source_create")
    call expect(MQ_ERR_INVALID, mq_source_connect(bad, 0.0_real64), "connect with timeout 0")
    call expect(MQ_ERR_CONNECT, mq_source_connect(bad, 5.0_real64), "connect to a refused port")
    call mq_source_free(bad)
    call check(.not. c_associated(bad), "mq_source_free nulls the handle")
    call expect(MQ_ERR_INVALID, mq_source_flush(bad), "flush on a null handle")
    call expect(MQ_ERR_INVALID, mq_set_log_level(12345), "mq_set_log_level(12345)")

    ! ---- the cycle
    write (error_unit, '(a)') "== cycle"
    src = mq_source_new(url, "ftest-main")
    if (.not. c_associated(src)) then
        write (error_unit, '(a,a)') "FAIL: connect: ", mq_last_error()
        error stop 1
    end if
    call expect(MQ_OK, mq_source_config(src, config), "config")
    call check(index(config, '"answer":42') > 0, "config is "//config)

    call expect(MQ_OK, mq_source_declare(src, "ftest.single", '{"unit": "K", "rate": 10}'), "declare single")
    padded = "ftest.plain"   ! trailing blanks are trimmed
    call expect(MQ_OK, mq_source_declare(src, padded, timeout=30.0_real64), "declare plain")
    call expect(MQ_OK, mq_source_declare_many(src, '["ftest.batch", "ftest.strided"]'), "declare_many")

    do i = 0, 4
        call expect(MQ_OK, mq_source_send(src, "ftest.single", t0 + i * 1000000_int64, 0.5_real64 * i), "send")
    end do
    call expect_seq("ftest.single", 5_int64, t0, 1000000_int64, 0.0_real64, 0.5_real64)
    call say("chunks ftest.single exact 1,1,1,1,1")
    call expect(MQ_OK, mq_source_send(src, padded, t0, -2.5_real64, 10.0_real64), "send plain")
    call say("point ftest.plain "//istr(t0)//" "//rstr(-2.5_real64))
    call say("chunks ftest.plain exact 1")

    ! batch: chunks of 4 (a default-integer literal), then a strided slice.
    call expect(MQ_OK, mq_source_set_chunk_size(src, "ftest.batch", 4), "set_chunk_size")
    do i = 1, 10
        times(i) = t0 + (i - 1) * 1000_int64
        values(i) = 100.0_real64 + (i - 1)
    end do
    call expect(MQ_OK, mq_source_send_batch(src, "ftest.batch", times, values), "send_batch")
    allocate (no_times(0), no_values(0))
    call expect(MQ_OK, mq_source_send_batch(src, "ftest.batch", no_times, no_values), "send_batch empty")
    call expect_seq("ftest.batch", 10_int64, t0, 1000_int64, 100.0_real64, 1.0_real64)
    call say("chunks ftest.batch max 4")
    call expect(MQ_OK, mq_source_set_chunk_size(src, "ftest.strided", 0_int64), "set_chunk_size 0")
    call expect(MQ_OK, mq_source_send_batch(src, "ftest.strided", times(1:10:3), values(1:10:3), 5.0_real64), &
                "send_batch strided")
    call expect_seq("ftest.strided", 4_int64, t0, 3000_int64, 100.0_real64, 3.0_real64)
    call say("chunks ftest.strided exact 4")
    call expect(MQ_OK, mq_source_flush(src), "flush")

    ! error mapping: nothing below is accepted.
    call expect(MQ_ERR_INVALID, mq_source_declare(src, "bad*name"), "declare bad*name")
    call expect(MQ_ERR_INVALID, mq_source_declare(src, "ftest.x", "{not json"), "declare bad JSON")
    call expect(MQ_ERR_INVALID, mq_source_send(src, "_private", t0, 1.0_real64), "send _private")
    call expect(MQ_ERR_UNDECLARED, mq_source_send(src, "ftest.undeclared", t0, 1.0_real64), "send undeclared")
    call check(index(mq_last_error(), "ftest.undeclared") > 0, "the last error names the metric")
    call expect(MQ_ERR_ORDER, mq_source_send(src, "ftest.single", t0, 1.0_real64), "send out of order")
    one_time(1) = t0 + 99000_int64
    call expect(MQ_ERR_INVALID, mq_source_send_batch(src, "ftest.batch", one_time, two_values), "batch sizes")
    call check(index(mq_last_error(), "1 times but 2 values") > 0, "batch sizes: "//mq_last_error())
    one_value(1) = 1.0_real64
    call expect(MQ_ERR_ORDER, mq_source_send_batch(src, "ftest.batch", [t0, t0 + 1], [1.0_real64, 2.0_real64]), &
                "batch out of order")
    call expect(MQ_ERR_INVALID, mq_source_set_chunk_size(src, -1), "chunk size -1")
    call expect(MQ_ERR_INVALID, mq_source_flush(src, -1.0_real64), "flush timeout -1")
    call expect(MQ_ERR_INVALID, mq_source_set_max_buffered(src, 1000), "set_max_buffered after connect")

    call expect(MQ_OK, mq_source_stats(src, st), "stats")
    call check(st%points_accepted == 20_int64, "stats: points_accepted")
    call expect(MQ_OK, mq_source_stop(src), "stop")
    call expect(MQ_OK, mq_source_stop(src, 5.0_real64), "stop again")
    call expect(MQ_ERR_STOPPED, mq_source_send(src, "ftest.single", t0 + 9000000_int64, 1.0_real64), &
                "send after stop")
    call mq_source_free(src)

    ! ---- configuration handler
    write (error_unit, '(a)') "== config handler"
    src = mq_source_create(url, "ftest-config")
    call expect(MQ_OK, mq_source_set_max_buffered(src, 100000), "set_max_buffered")
    call expect(MQ_OK, mq_source_set_config_handler(src, on_config), "set_config_handler")
    call expect(MQ_OK, mq_source_connect(src), "connect")
    call check(config_calls == 1, "config handler called at connect")
    call expect(MQ_OK, mq_source_send(src, "ftest.config.value", t0, 1.0_real64), "send (declared by the handler)")
    call say("point ftest.config.value "//istr(t0)//" "//rstr(1.0_real64))
    call say("chunks ftest.config.value exact 1")
    text = push_config("ftest-config", '{"rate": 7}')
    call check(text == "ok", "config push: "//text)
    call check(config_calls == 2, "config handler called on the push")
    call expect(MQ_OK, mq_source_config(src, config), "config")
    call check(index(config, '"rate":7') > 0, "config after the push: "//config)
    text = push_config("ftest-config", '{"norate": 1}')
    call check(index(text, "error") == 1, "refused config push: "//text)
    call expect(MQ_OK, mq_source_set_config_handler(src), "remove the handler")
    text = push_config("ftest-config", '{"other": 1}')
    call check(text == "ok", "config push without a handler: "//text)
    call check(config_calls == 3, "removed handler not called")
    call mq_source_free(src)

    ! ---- metric handles: sends as by name; a handle of a freed source fails
    write (error_unit, '(a)') "== metric handles"
    src = mq_source_new(url, "ftest-handles")
    call expect(MQ_OK, mq_source_declare_many(src, '["ftest.handle", "ftest.handle_batch"]'), "declare handles")
    call expect(MQ_OK, mq_source_set_chunk_size(src, "ftest.handle_batch", 3), "set_chunk_size handle_batch")
    handle = mq_source_metric(src, "ftest.handle")
    call check(c_associated(handle), "mq_source_metric: "//mq_last_error())
    call check(c_associated(handle, mq_source_metric(src, "ftest.handle")), "one handle per name")
    batch_handle = mq_source_metric(src, "ftest.handle_batch")
    call check(c_associated(batch_handle), "mq_source_metric batch: "//mq_last_error())
    call check(.not. c_associated(mq_source_metric(src, "bad*name")), "a handle for bad*name")
    call check(len(mq_last_error()) > 0, "no last error after bad*name")
    do i = 0, 2
        call expect(MQ_OK, mq_metric_send(handle, t0 + i * 1000000_int64, 1.5_real64 * i), "send by handle")
    end do
    call expect_seq("ftest.handle", 3_int64, t0, 1000000_int64, 0.0_real64, 1.5_real64)
    call say("chunks ftest.handle exact 1,1,1")
    do i = 1, 6
        times(i) = t0 + (i - 1) * 1000_int64
        values(i) = 10.0_real64 + (i - 1)
    end do
    call expect(MQ_OK, mq_metric_send_batch(batch_handle, times(1:4), values(1:4)), "send_batch by handle")
    call expect(MQ_OK, mq_metric_send_batch(batch_handle, times(5:6), values(5:6), 5.0_real64), "send_batch 2")
    call expect(MQ_OK, mq_source_flush(src), "flush handles")
    call expect_seq("ftest.handle_batch", 6_int64, t0, 1000_int64, 10.0_real64, 1.0_real64)
    call say("chunks ftest.handle_batch exact 3,3")
    call expect(MQ_ERR_ORDER, mq_metric_send(handle, t0, 1.0_real64), "send by handle out of order")
    one_time(1) = t0 + 99000_int64
    call expect(MQ_ERR_INVALID, mq_metric_send_batch(batch_handle, one_time, two_values), "batch sizes by handle")
    call check(index(mq_last_error(), "1 times but 2 values") > 0, "batch sizes by handle: "//mq_last_error())
    call expect(MQ_ERR_UNDECLARED, mq_metric_send(mq_source_metric(src, "ftest.handle_undeclared"), t0, 1.0_real64), &
                "send by handle undeclared")
    call expect(MQ_OK, mq_source_stats(src, st), "stats handles")
    call check(st%points_accepted == 9_int64, "stats handles: points_accepted")
    call mq_source_free(src)
    call expect(MQ_ERR_INVALID, mq_metric_send(handle, t0 + 9000000_int64, 1.0_real64), "send by a stale handle")
    call expect(MQ_ERR_INVALID, mq_metric_send_batch(batch_handle, one_time, one_value), "batch by a stale handle")
    call expect(MQ_ERR_INVALID, mq_metric_send(c_null_ptr, t0, 1.0_real64), "send by a null handle")

    ! ---- run_interval and the log handler
    write (error_unit, '(a)') "== interval"
    call mq_set_log_handler(on_log)
    src = mq_source_new(url, "ftest-interval")
    call expect(MQ_OK, mq_source_declare(src, "ftest.interval"), "declare interval")
    rc = mq_source_run_interval(src, 0.02_real64, on_update)
    call expect(MQ_ERR_STOPPED, rc, "run_interval ended by update")
    call check(update_rounds == 4, "4 update rounds")
    call expect_seq("ftest.interval", 4_int64, t0, 1000_int64, 0.0_real64, 1.0_real64)
    call say("chunks ftest.interval exact 1,1,1,1")
    call mq_source_free(src)
    call mq_set_log_handler()
    call check(log_lines > 0, "the log handler saw the stop")
    call check(.not. log_password, "a password was logged")

    ! ---- client version, reconnect timeout, learning of a stop
    write (error_unit, '(a)') "== settings and wait"
    src = mq_source_create(getenv_or_stop("METRICQ_TEST_PROXY_URL"), "ftest-settings")
    call expect(MQ_ERR_INVALID, mq_source_set_reconnect_timeout(src, 0.0_real64), "reconnect timeout 0")
    call expect(MQ_ERR_INVALID, mq_source_set_heartbeat(src, 0.5_real64), "heartbeat 0.5 s")
    call expect(MQ_OK, mq_source_set_heartbeat(src, 5.0_real64), "set_heartbeat")
    call expect(MQ_OK, mq_source_set_client_version(src, "fortran-3.1"), "set_client_version")
    call expect(MQ_OK, mq_source_set_reconnect_timeout(src, 1.0_real64), "set_reconnect_timeout")
    call expect(MQ_OK, mq_source_connect(src), "connect through the proxy")
    call expect(MQ_ERR_INVALID, mq_source_set_client_version(src, "x"), "set_client_version after connect")
    text = request("discover ftest-settings")
    call check(text == "ok version=fortran-3.1", "discover: "//text)
    call expect(MQ_ERR_TIMEOUT, mq_source_wait(src, 0.1_real64), "wait on a running source")
    text = request("cut")
    call check(text == "ok", "cut: "//text)
    call expect(MQ_ERR_CONNECT, mq_source_wait(src, 30.0_real64), "wait for the stop on its own")
    call check(index(mq_last_error(), "stopped") > 0, "the cause: "//mq_last_error())
    call mq_source_free(src)
    src = mq_source_new(url, "ftest-settings-2")
    call expect(MQ_OK, mq_source_stop(src), "stop")
    call expect(MQ_OK, mq_source_wait(src, 5.0_real64), "wait after stop")
    call expect(MQ_OK, mq_source_stats(src, st), "stats after stop")
    call check(st%management_connected == 0 .and. st%data_connected == 0, "stats: disconnected after stop")
    call mq_source_free(src)

    call say("done")
    if (failures > 0) then
        write (error_unit, '(i0,a)') failures, " failures"
        error stop 1
    end if
    write (error_unit, '(a)') "all passed"
end program test_metricq
