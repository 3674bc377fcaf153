! metricq.f90: the Fortran interface of libmetricq, a MetricQ Source client.
!
! Module metricq wraps the C API (metricq.h) with the same names, for
! ordinary Fortran strings and arrays:
!
!   use metricq
!   type(c_ptr) :: src
!   integer :: rc
!   src = mq_source_new("amqp://user:pass@broker/", "source-example")
!   if (.not. c_associated(src)) stop mq_last_error()
!   rc = mq_source_declare(src, "example.temperature", '{"unit": "degC"}')
!   rc = mq_source_send(src, "example.temperature", mq_now(), 21.5_real64)
!   rc = mq_source_stop(src)
!   call mq_source_free(src)
!
! Conventions:
!  - A source is a type(c_ptr) handle; mq_source_new returns c_null_ptr on
!    failure (check with c_associated; mq_last_error() says why).
!  - Functions return an integer status: MQ_OK (0) or a negative MQ_ERR_*;
!    after a failure mq_last_error() gives the detail for this thread.
!  - Strings are ordinary Fortran strings: trailing blanks are trimmed and
!    the NUL terminator is added here. Strings returned are allocatable
!    character(len=:).
!  - Timestamps are integer(int64) nanoseconds since the Unix epoch (UTC),
!    values real(real64), timeouts real(real64) seconds, optional,
!    MQ_DEFAULT_TIMEOUT (60 s) when absent.
!  - Callbacks (configuration handler, interval update, log handler) are
!    bind(C) procedures with the interfaces mq_config_fn, mq_update_fn and
!    mq_log_fn; their string arguments are C pointers, which mq_c_string
!    turns into Fortran strings.
!
! Build: gfortran -c metricq.f90 (or use the installed metricq.mod and
! libmetricq_fortran.a); link with -lmetricq_fortran -lmetricq.
module metricq
    use, intrinsic :: iso_c_binding, only: c_ptr, c_null_ptr, c_funptr, c_null_funptr, c_associated, &
        c_int, c_int64_t, c_double, c_size_t, c_char, c_null_char, c_loc, c_f_pointer, c_funloc, c_sizeof
    use, intrinsic :: iso_fortran_env, only: int64, real64
    implicit none
    private

    ! Re-exported, so that `use metricq` is enough for handles.
    public :: c_ptr, c_null_ptr, c_associated, c_int, c_double, int64, real64

    ! Version of the C header this module was written for.
    integer, parameter, public :: MQ_VERSION_MAJOR = 0, MQ_VERSION_MINOR = 1, MQ_VERSION_PATCH = 0
    character(len=*), parameter, public :: MQ_VERSION_STRING = "0.1.0"

    ! Status codes: 0 is success, every error is negative.
    integer, parameter, public :: MQ_OK = 0
    integer, parameter, public :: MQ_ERR_INVALID = -1     ! bad argument, name, JSON, timeout, handle
    integer, parameter, public :: MQ_ERR_TIMEOUT = -2     ! the call could not complete in time
    integer, parameter, public :: MQ_ERR_CONNECT = -3     ! broker unreachable, login refused, connection lost
    integer, parameter, public :: MQ_ERR_RPC = -4         ! the manager answered with an error
    integer, parameter, public :: MQ_ERR_UNDECLARED = -5  ! send for a metric never declared
    integer, parameter, public :: MQ_ERR_ORDER = -6       ! timestamp not after the metric's last one
    integer, parameter, public :: MQ_ERR_PUBLISH = -7     ! publishing failed; accepted points stay buffered
    integer, parameter, public :: MQ_ERR_STOPPED = -8     ! the source was stopped
    integer, parameter, public :: MQ_ERR_INTERNAL = -9    ! an internal failure that was contained

    real(real64), parameter, public :: MQ_DEFAULT_TIMEOUT = 60.0_real64
    integer(int64), parameter, public :: MQ_DEFAULT_CHUNK_SIZE = 1_int64
    integer(int64), parameter, public :: MQ_DEFAULT_MAX_BUFFERED = 1048576_int64
    integer, parameter, public :: MQ_MAX_NAME_LENGTH = 255

    integer, parameter, public :: MQ_LOG_DEBUG = 10, MQ_LOG_INFO = 20, MQ_LOG_WARN = 30, &
        MQ_LOG_ERROR = 40, MQ_LOG_OFF = 100

    ! Counters of a source (mq_source_stats). The C fields are uint64_t;
    ! they are read as integer(int64).
    type, bind(C), public :: mq_stats
        integer(c_int64_t) :: points_accepted = 0
        integer(c_int64_t) :: points_published = 0
        integer(c_int64_t) :: points_confirmed = 0
        integer(c_int64_t) :: chunks_published = 0
        integer(c_int64_t) :: chunks_confirmed = 0
        integer(c_int64_t) :: bytes_published = 0
        integer(c_int64_t) :: buffered_points = 0
        integer(c_int64_t) :: reconnects = 0
        integer(c_int64_t) :: publish_errors = 0
        integer(c_int64_t) :: buffer_full_waits = 0
        integer(c_int64_t) :: blocked_events = 0
        integer(c_int64_t) :: blocked = 0
        integer(c_int64_t) :: chunks_republished = 0
        integer(c_int64_t) :: buffer_full_timeouts = 0
        integer(c_int64_t) :: points_dropped = 0
        integer(c_int64_t) :: management_reconnects = 0
        integer(c_int64_t) :: data_connected = 0
        integer(c_int64_t) :: management_connected = 0
    end type mq_stats

    ! The callbacks, as the C library calls them.
    abstract interface
        ! Configuration handler: return 0 to accept config_json (a C string:
        ! mq_c_string(config_json)), anything else refuses it.
        function mq_config_fn(src, config_json, user) result(rc) bind(C)
            import :: c_ptr, c_int
            type(c_ptr), value :: src, config_json, user
            integer(c_int) :: rc
        end function mq_config_fn
        ! Interval update: 0 carries on, MQ_ERR_PUBLISH is logged and the
        ! schedule carries on, anything else stops the source.
        function mq_update_fn(src, user) result(rc) bind(C)
            import :: c_ptr, c_int
            type(c_ptr), value :: src, user
            integer(c_int) :: rc
        end function mq_update_fn
        ! Log handler: message is a C string (mq_c_string(message)).
        subroutine mq_log_fn(level, message, user) bind(C)
            import :: c_ptr, c_int
            integer(c_int), value :: level
            type(c_ptr), value :: message, user
        end subroutine mq_log_fn
    end interface
    public :: mq_config_fn, mq_update_fn, mq_log_fn

    public :: mq_version, mq_strerror, mq_last_error, mq_now, mq_c_string
    public :: mq_source_new, mq_source_create, mq_source_connect, mq_source_declare, mq_source_declare_many
    public :: mq_source_set_chunk_size, mq_source_send, mq_source_send_batch, mq_source_flush
    public :: mq_source_config, mq_source_stop, mq_source_free, mq_source_set_max_buffered
    public :: mq_source_set_config_handler, mq_source_run_interval, mq_source_set_period
    public :: mq_source_stats, mq_set_log_handler, mq_set_log_level
    public :: mq_source_set_client_version, mq_source_set_reconnect_timeout, mq_source_set_heartbeat
    public :: mq_source_wait
    public :: mq_source_metric, mq_metric_send, mq_metric_send_batch

    ! Integer arguments of kind int64 or c_int (a default integer literal).
    interface mq_source_set_chunk_size
        module procedure set_chunk_size_metric, set_chunk_size_metric_int, &
            set_chunk_size_default, set_chunk_size_default_int
    end interface mq_source_set_chunk_size
    interface mq_source_set_max_buffered
        module procedure set_max_buffered, set_max_buffered_int
    end interface mq_source_set_max_buffered

    ! Why the last call failed before reaching the library (arrays of
    ! different sizes in mq_source_send_batch), shown by mq_last_error()
    ! until the next call. (Module state: with several threads, the text may
    ! be another thread's.)
    character(len=256) :: local_error = ""
    logical :: local_error_set = .false.

    ! The C functions.
    interface
        function c_strlen(s) result(n) bind(C, name="strlen")
            import :: c_ptr, c_size_t
            type(c_ptr), value :: s
            integer(c_size_t) :: n
        end function c_strlen
        function c_mq_version() result(s) bind(C, name="mq_version")
            import :: c_ptr
            type(c_ptr) :: s
        end function c_mq_version
        function c_mq_strerror(status) result(s) bind(C, name="mq_strerror")
            import :: c_ptr, c_int
            integer(c_int), value :: status
            type(c_ptr) :: s
        end function c_mq_strerror
        function c_mq_last_error() result(s) bind(C, name="mq_last_error")
            import :: c_ptr
            type(c_ptr) :: s
        end function c_mq_last_error
        function c_mq_now() result(t) bind(C, name="mq_now")
            import :: c_int64_t
            integer(c_int64_t) :: t
        end function c_mq_now
        function c_mq_source_new(url, token, timeout) result(src) bind(C, name="mq_source_new")
            import :: c_ptr, c_char, c_double
            character(kind=c_char), intent(in) :: url(*), token(*)
            real(c_double), value :: timeout
            type(c_ptr) :: src
        end function c_mq_source_new
        function c_mq_source_create(url, token) result(src) bind(C, name="mq_source_create")
            import :: c_ptr, c_char
            character(kind=c_char), intent(in) :: url(*), token(*)
            type(c_ptr) :: src
        end function c_mq_source_create
        function c_mq_source_connect(src, timeout) result(rc) bind(C, name="mq_source_connect")
            import :: c_ptr, c_double, c_int
            type(c_ptr), value :: src
            real(c_double), value :: timeout
            integer(c_int) :: rc
        end function c_mq_source_connect
        function c_mq_source_declare(src, metric, metadata_json, timeout) result(rc) &
            bind(C, name="mq_source_declare")
            import :: c_ptr, c_char, c_double, c_int
            type(c_ptr), value :: src
            character(kind=c_char), intent(in) :: metric(*)
            type(c_ptr), value :: metadata_json
            real(c_double), value :: timeout
            integer(c_int) :: rc
        end function c_mq_source_declare
        function c_mq_source_declare_many(src, metrics_json, timeout) result(rc) &
            bind(C, name="mq_source_declare_many")
            import :: c_ptr, c_char, c_double, c_int
            type(c_ptr), value :: src
            character(kind=c_char), intent(in) :: metrics_json(*)
            real(c_double), value :: timeout
            integer(c_int) :: rc
        end function c_mq_source_declare_many
        function c_mq_source_set_chunk_size(src, metric, chunk_size) result(rc) &
            bind(C, name="mq_source_set_chunk_size")
            import :: c_ptr, c_int64_t, c_int
            type(c_ptr), value :: src, metric
            integer(c_int64_t), value :: chunk_size
            integer(c_int) :: rc
        end function c_mq_source_set_chunk_size
        function c_mq_source_send(src, metric, time_ns, value, timeout) result(rc) bind(C, name="mq_source_send")
            import :: c_ptr, c_char, c_int64_t, c_double, c_int
            type(c_ptr), value :: src
            character(kind=c_char), intent(in) :: metric(*)
            integer(c_int64_t), value :: time_ns
            real(c_double), value :: value, timeout
            integer(c_int) :: rc
        end function c_mq_source_send
        function c_mq_source_send_batch(src, metric, time_ns, values, count, timeout) result(rc) &
            bind(C, name="mq_source_send_batch")
            import :: c_ptr, c_char, c_int64_t, c_double, c_size_t, c_int
            type(c_ptr), value :: src
            character(kind=c_char), intent(in) :: metric(*)
            integer(c_int64_t), intent(in) :: time_ns(*)
            real(c_double), intent(in) :: values(*)
            integer(c_size_t), value :: count
            real(c_double), value :: timeout
            integer(c_int) :: rc
        end function c_mq_source_send_batch
        function c_mq_source_metric(src, metric) result(m) bind(C, name="mq_source_metric")
            import :: c_ptr, c_char
            type(c_ptr), value :: src
            character(kind=c_char), intent(in) :: metric(*)
            type(c_ptr) :: m
        end function c_mq_source_metric
        function c_mq_metric_send(m, time_ns, value, timeout) result(rc) bind(C, name="mq_metric_send")
            import :: c_ptr, c_int64_t, c_double, c_int
            type(c_ptr), value :: m
            integer(c_int64_t), value :: time_ns
            real(c_double), value :: value, timeout
            integer(c_int) :: rc
        end function c_mq_metric_send
        function c_mq_metric_send_batch(m, time_ns, values, count, timeout) result(rc) &
            bind(C, name="mq_metric_send_batch")
            import :: c_ptr, c_int64_t, c_double, c_size_t, c_int
            type(c_ptr), value :: m
            integer(c_int64_t), intent(in) :: time_ns(*)
            real(c_double), intent(in) :: values(*)
            integer(c_size_t), value :: count
            real(c_double), value :: timeout
            integer(c_int) :: rc
        end function c_mq_metric_send_batch
        function c_mq_source_flush(src, timeout) result(rc) bind(C, name="mq_source_flush")
            import :: c_ptr, c_double, c_int
            type(c_ptr), value :: src
            real(c_double), value :: timeout
            integer(c_int) :: rc
        end function c_mq_source_flush
        function c_mq_source_config(src, buf, size) result(rc) bind(C, name="mq_source_config")
            import :: c_ptr, c_size_t, c_int
            type(c_ptr), value :: src, buf
            integer(c_size_t), value :: size
            integer(c_int) :: rc
        end function c_mq_source_config
        function c_mq_source_stop(src, timeout) result(rc) bind(C, name="mq_source_stop")
            import :: c_ptr, c_double, c_int
            type(c_ptr), value :: src
            real(c_double), value :: timeout
            integer(c_int) :: rc
        end function c_mq_source_stop
        subroutine c_mq_source_free(src) bind(C, name="mq_source_free")
            import :: c_ptr
            type(c_ptr), value :: src
        end subroutine c_mq_source_free
        function c_mq_source_set_max_buffered(src, points) result(rc) bind(C, name="mq_source_set_max_buffered")
            import :: c_ptr, c_int64_t, c_int
            type(c_ptr), value :: src
            integer(c_int64_t), value :: points
            integer(c_int) :: rc
        end function c_mq_source_set_max_buffered
        function c_mq_source_set_client_version(src, version) result(rc) &
            bind(C, name="mq_source_set_client_version")
            import :: c_ptr, c_char, c_int
            type(c_ptr), value :: src
            character(kind=c_char), intent(in) :: version(*)
            integer(c_int) :: rc
        end function c_mq_source_set_client_version
        function c_mq_source_set_reconnect_timeout(src, seconds) result(rc) &
            bind(C, name="mq_source_set_reconnect_timeout")
            import :: c_ptr, c_double, c_int
            type(c_ptr), value :: src
            real(c_double), value :: seconds
            integer(c_int) :: rc
        end function c_mq_source_set_reconnect_timeout
        function c_mq_source_set_heartbeat(src, seconds) result(rc) bind(C, name="mq_source_set_heartbeat")
            import :: c_ptr, c_double, c_int
            type(c_ptr), value :: src
            real(c_double), value :: seconds
            integer(c_int) :: rc
        end function c_mq_source_set_heartbeat
        function c_mq_source_wait(src, timeout) result(rc) bind(C, name="mq_source_wait")
            import :: c_ptr, c_double, c_int
            type(c_ptr), value :: src
            real(c_double), value :: timeout
            integer(c_int) :: rc
        end function c_mq_source_wait
        function c_mq_source_set_config_handler(src, fn, user) result(rc) &
            bind(C, name="mq_source_set_config_handler")
            import :: c_ptr, c_funptr, c_int
            type(c_ptr), value :: src
            type(c_funptr), value :: fn
            type(c_ptr), value :: user
            integer(c_int) :: rc
        end function c_mq_source_set_config_handler
        function c_mq_source_run_interval(src, period, update, user) result(rc) &
            bind(C, name="mq_source_run_interval")
            import :: c_ptr, c_funptr, c_double, c_int
            type(c_ptr), value :: src
            real(c_double), value :: period
            type(c_funptr), value :: update
            type(c_ptr), value :: user
            integer(c_int) :: rc
        end function c_mq_source_run_interval
        function c_mq_source_set_period(src, period) result(rc) bind(C, name="mq_source_set_period")
            import :: c_ptr, c_double, c_int
            type(c_ptr), value :: src
            real(c_double), value :: period
            integer(c_int) :: rc
        end function c_mq_source_set_period
        function c_mq_source_stats(src, stats, size) result(rc) bind(C, name="mq_source_stats")
            import :: c_ptr, c_size_t, c_int
            type(c_ptr), value :: src, stats
            integer(c_size_t), value :: size
            integer(c_int) :: rc
        end function c_mq_source_stats
        subroutine c_mq_set_log_handler(fn, user) bind(C, name="mq_set_log_handler")
            import :: c_ptr, c_funptr
            type(c_funptr), value :: fn
            type(c_ptr), value :: user
        end subroutine c_mq_set_log_handler
        function c_mq_set_log_level(level) result(rc) bind(C, name="mq_set_log_level")
            import :: c_int
            integer(c_int), value :: level
            integer(c_int) :: rc
        end function c_mq_set_log_level
    end interface

contains

    ! A Fortran string as a C string: trailing blanks trimmed, NUL added.
    pure function cstr(s) result(c)
        character(len=*), intent(in) :: s
        character(kind=c_char, len=:), allocatable :: c
        c = trim(s)//c_null_char
    end function cstr

    ! The timeout argument or the default.
    pure function timeout_or_default(timeout) result(t)
        real(real64), intent(in), optional :: timeout
        real(c_double) :: t
        t = MQ_DEFAULT_TIMEOUT
        if (present(timeout)) t = real(timeout, c_double)
    end function timeout_or_default

    subroutine clear_local_error()
        if (local_error_set) local_error_set = .false.
    end subroutine clear_local_error

    ! Copies a NUL-terminated C string into a Fortran string ("" for a null
    ! pointer). For the string arguments of callbacks.
    function mq_c_string(p) result(s)
        type(c_ptr), intent(in) :: p
        character(len=:), allocatable :: s
        character(kind=c_char), pointer :: chars(:)
        integer :: n, i
        if (.not. c_associated(p)) then
            s = ""
            return
        end if
        n = int(c_strlen(p))
        call c_f_pointer(p, chars, [n])
        allocate (character(len=n) :: s)
        do i = 1, n
            s(i:i) = chars(i)
        end do
    end function mq_c_string

    ! The library's version, e.g. "libmetricq/0.1.0".
    function mq_version() result(s)
        character(len=:), allocatable :: s
        s = mq_c_string(c_mq_version())
    end function mq_version

    ! Static description of a status code.
    function mq_strerror(status) result(s)
        integer, intent(in) :: status
        character(len=:), allocatable :: s
        s = mq_c_string(c_mq_strerror(int(status, c_int)))
    end function mq_strerror

    ! Why this thread's last failed call failed ("" if none).
    function mq_last_error() result(s)
        character(len=:), allocatable :: s
        if (local_error_set) then
            s = trim(local_error)
        else
            s = mq_c_string(c_mq_last_error())
        end if
    end function mq_last_error

    ! Nanoseconds since the Unix epoch, UTC.
    function mq_now() result(t)
        integer(int64) :: t
        t = int(c_mq_now(), int64)
    end function mq_now

    ! Connects, registers token with the manager and returns the ready
    ! source, or c_null_ptr (then mq_last_error() says why).
    function mq_source_new(url, token, timeout) result(src)
        character(len=*), intent(in) :: url, token
        real(real64), intent(in), optional :: timeout
        type(c_ptr) :: src
        call clear_local_error()
        src = c_mq_source_new(cstr(url), cstr(token), timeout_or_default(timeout))
    end function mq_source_new

    ! A source that is not connected yet (no I/O); then set_max_buffered,
    ! set_config_handler and mq_source_connect.
    function mq_source_create(url, token) result(src)
        character(len=*), intent(in) :: url, token
        type(c_ptr) :: src
        call clear_local_error()
        src = c_mq_source_create(cstr(url), cstr(token))
    end function mq_source_create

    function mq_source_connect(src, timeout) result(rc)
        type(c_ptr), intent(in) :: src
        real(real64), intent(in), optional :: timeout
        integer :: rc
        call clear_local_error()
        rc = int(c_mq_source_connect(src, timeout_or_default(timeout)))
    end function mq_source_connect

    ! Declares one metric; metadata_json is a JSON object (absent: {}).
    function mq_source_declare(src, metric, metadata_json, timeout) result(rc)
        type(c_ptr), intent(in) :: src
        character(len=*), intent(in) :: metric
        character(len=*), intent(in), optional :: metadata_json
        real(real64), intent(in), optional :: timeout
        integer :: rc
        character(kind=c_char, len=:), allocatable, target :: meta
        call clear_local_error()
        if (present(metadata_json)) then
            meta = cstr(metadata_json)
            rc = int(c_mq_source_declare(src, cstr(metric), c_loc(meta), timeout_or_default(timeout)))
        else
            rc = int(c_mq_source_declare(src, cstr(metric), c_null_ptr, timeout_or_default(timeout)))
        end if
    end function mq_source_declare

    ! Declares several: a JSON object {name: metadata, ...} or an array of names.
    function mq_source_declare_many(src, metrics_json, timeout) result(rc)
        type(c_ptr), intent(in) :: src
        character(len=*), intent(in) :: metrics_json
        real(real64), intent(in), optional :: timeout
        integer :: rc
        call clear_local_error()
        rc = int(c_mq_source_declare_many(src, cstr(metrics_json), timeout_or_default(timeout)))
    end function mq_source_declare_many

    ! mq_source_set_chunk_size(src, metric, chunk_size): points per chunk
    ! for one declared metric; mq_source_set_chunk_size(src, chunk_size): the
    ! default for metrics declared afterwards. 0: only on flush.
    function set_chunk_size_metric(src, metric, chunk_size) result(rc)
        type(c_ptr), intent(in) :: src
        character(len=*), intent(in) :: metric
        integer(int64), intent(in) :: chunk_size
        integer :: rc
        character(kind=c_char, len=:), allocatable, target :: m
        call clear_local_error()
        m = cstr(metric)
        rc = int(c_mq_source_set_chunk_size(src, c_loc(m), int(chunk_size, c_int64_t)))
    end function set_chunk_size_metric

    function set_chunk_size_metric_int(src, metric, chunk_size) result(rc)
        type(c_ptr), intent(in) :: src
        character(len=*), intent(in) :: metric
        integer(c_int), intent(in) :: chunk_size
        integer :: rc
        rc = set_chunk_size_metric(src, metric, int(chunk_size, int64))
    end function set_chunk_size_metric_int

    function set_chunk_size_default(src, chunk_size) result(rc)
        type(c_ptr), intent(in) :: src
        integer(int64), intent(in) :: chunk_size
        integer :: rc
        call clear_local_error()
        rc = int(c_mq_source_set_chunk_size(src, c_null_ptr, int(chunk_size, c_int64_t)))
    end function set_chunk_size_default

    function set_chunk_size_default_int(src, chunk_size) result(rc)
        type(c_ptr), intent(in) :: src
        integer(c_int), intent(in) :: chunk_size
        integer :: rc
        rc = set_chunk_size_default(src, int(chunk_size, int64))
    end function set_chunk_size_default_int

    ! Accepts one point (MQ_OK) or nothing (an error).
    function mq_source_send(src, metric, time_ns, value, timeout) result(rc)
        type(c_ptr), intent(in) :: src
        character(len=*), intent(in) :: metric
        integer(int64), intent(in) :: time_ns
        real(real64), intent(in) :: value
        real(real64), intent(in), optional :: timeout
        integer :: rc
        call clear_local_error()
        rc = int(c_mq_source_send(src, cstr(metric), int(time_ns, c_int64_t), real(value, c_double), &
                                  timeout_or_default(timeout)))
    end function mq_source_send

    ! Accepts size(times) points of one metric at once, all or none; times
    ! strictly increasing. The arrays must have the same size.
    function mq_source_send_batch(src, metric, times, values, timeout) result(rc)
        type(c_ptr), intent(in) :: src
        character(len=*), intent(in) :: metric
        integer(int64), intent(in) :: times(:)
        real(real64), intent(in) :: values(:)
        real(real64), intent(in), optional :: timeout
        integer :: rc
        rc = batch_sizes("mq_source_send_batch", times, values)
        if (rc /= MQ_OK) return
        rc = int(c_mq_source_send_batch(src, cstr(metric), times, values, int(size(times), c_size_t), &
                                        timeout_or_default(timeout)))
    end function mq_source_send_batch

    ! Clears the local error; arrays of different sizes are MQ_ERR_INVALID,
    ! with the reason for mq_last_error().
    function batch_sizes(what, times, values) result(rc)
        character(len=*), intent(in) :: what
        integer(int64), intent(in) :: times(:)
        real(real64), intent(in) :: values(:)
        integer :: rc
        call clear_local_error()
        rc = MQ_OK
        if (size(times) /= size(values)) then
            write (local_error, '(a,a,i0,a,i0,a)') what, ": ", size(times), " times but ", size(values), " values"
            local_error_set = .true.
            rc = MQ_ERR_INVALID
        end if
    end function batch_sizes

    ! The handle of one metric of src, for the fastest sends (no look-up by
    ! name): the same handle for the same name every time; c_null_ptr for a
    ! bad source or name (mq_last_error() says why). The metric need not be
    ! declared yet. Valid until mq_source_free(src), and never freed itself;
    ! after that, sends by it return MQ_ERR_INVALID.
    function mq_source_metric(src, metric) result(m)
        type(c_ptr), intent(in) :: src
        character(len=*), intent(in) :: metric
        type(c_ptr) :: m
        call clear_local_error()
        m = c_mq_source_metric(src, cstr(metric))
    end function mq_source_metric

    ! mq_source_send by a metric handle (mq_source_metric).
    function mq_metric_send(m, time_ns, value, timeout) result(rc)
        type(c_ptr), intent(in) :: m
        integer(int64), intent(in) :: time_ns
        real(real64), intent(in) :: value
        real(real64), intent(in), optional :: timeout
        integer :: rc
        call clear_local_error()
        rc = int(c_mq_metric_send(m, int(time_ns, c_int64_t), real(value, c_double), timeout_or_default(timeout)))
    end function mq_metric_send

    ! mq_source_send_batch by a metric handle (mq_source_metric).
    function mq_metric_send_batch(m, times, values, timeout) result(rc)
        type(c_ptr), intent(in) :: m
        integer(int64), intent(in) :: times(:)
        real(real64), intent(in) :: values(:)
        real(real64), intent(in), optional :: timeout
        integer :: rc
        rc = batch_sizes("mq_metric_send_batch", times, values)
        if (rc /= MQ_OK) return
        rc = int(c_mq_metric_send_batch(m, times, values, int(size(times), c_size_t), timeout_or_default(timeout)))
    end function mq_metric_send_batch

    ! Returns once every point accepted before the call went to the broker.
    function mq_source_flush(src, timeout) result(rc)
        type(c_ptr), intent(in) :: src
        real(real64), intent(in), optional :: timeout
        integer :: rc
        call clear_local_error()
        rc = int(c_mq_source_flush(src, timeout_or_default(timeout)))
    end function mq_source_flush

    ! The JSON text of the configuration the manager sent, in config.
    function mq_source_config(src, config) result(rc)
        type(c_ptr), intent(in) :: src
        character(len=:), allocatable, intent(out) :: config
        integer :: rc
        character(kind=c_char), allocatable, target :: buf(:)
        integer :: n, i
        call clear_local_error()
        n = 256
        do
            allocate (buf(n + 1))
            rc = int(c_mq_source_config(src, c_loc(buf), int(n + 1, c_size_t)))
            if (rc < 0) then
                config = ""
                return
            end if
            if (rc <= n) exit
            n = rc
            deallocate (buf)
        end do
        allocate (character(len=rc) :: config)
        do i = 1, rc
            config(i:i) = buf(i)
        end do
        rc = MQ_OK
    end function mq_source_config

    ! Flushes (within timeout), then disconnects. Idempotent.
    function mq_source_stop(src, timeout) result(rc)
        type(c_ptr), intent(in) :: src
        real(real64), intent(in), optional :: timeout
        integer :: rc
        call clear_local_error()
        rc = int(c_mq_source_stop(src, timeout_or_default(timeout)))
    end function mq_source_stop

    ! Stops if needed and releases the handle, which becomes c_null_ptr.
    subroutine mq_source_free(src)
        type(c_ptr), intent(inout) :: src
        call clear_local_error()
        call c_mq_source_free(src)
        src = c_null_ptr
    end subroutine mq_source_free

    ! Bounds the points held until the broker confirms them; before connecting.
    function set_max_buffered(src, points) result(rc)
        type(c_ptr), intent(in) :: src
        integer(int64), intent(in) :: points
        integer :: rc
        call clear_local_error()
        rc = int(c_mq_source_set_max_buffered(src, int(points, c_int64_t)))
    end function set_max_buffered

    function set_max_buffered_int(src, points) result(rc)
        type(c_ptr), intent(in) :: src
        integer(c_int), intent(in) :: points
        integer :: rc
        rc = set_max_buffered(src, int(points, int64))
    end function set_max_buffered_int

    ! The version reported in the manager's "discover" replies; before
    ! connecting.
    function mq_source_set_client_version(src, version) result(rc)
        type(c_ptr), intent(in) :: src
        character(len=*), intent(in) :: version
        integer :: rc
        call clear_local_error()
        rc = int(c_mq_source_set_client_version(src, cstr(version)))
    end function mq_source_set_client_version

    ! Seconds a lost connection may stay down before the source stops on
    ! its own; before connecting.
    function mq_source_set_reconnect_timeout(src, seconds) result(rc)
        type(c_ptr), intent(in) :: src
        real(real64), intent(in) :: seconds
        integer :: rc
        call clear_local_error()
        rc = int(c_mq_source_set_reconnect_timeout(src, real(seconds, c_double)))
    end function mq_source_set_reconnect_timeout

    ! The AMQP heartbeat of both connections, whole seconds 1 to 65535
    ! (default 6); before connecting.
    function mq_source_set_heartbeat(src, seconds) result(rc)
        type(c_ptr), intent(in) :: src
        real(real64), intent(in) :: seconds
        integer :: rc
        call clear_local_error()
        rc = int(c_mq_source_set_heartbeat(src, real(seconds, c_double)))
    end function mq_source_set_heartbeat

    ! Blocks until the source stopped (MQ_OK after mq_source_stop; the cause,
    ! e.g. MQ_ERR_CONNECT, when it stopped on its own) or timeout passed
    ! (MQ_ERR_TIMEOUT). Sends nothing.
    function mq_source_wait(src, timeout) result(rc)
        type(c_ptr), intent(in) :: src
        real(real64), intent(in), optional :: timeout
        integer :: rc
        call clear_local_error()
        rc = int(c_mq_source_wait(src, timeout_or_default(timeout)))
    end function mq_source_wait

    ! Installs the configuration handler fn (absent: removes it); user is
    ! passed to it (default c_null_ptr).
    function mq_source_set_config_handler(src, fn, user) result(rc)
        type(c_ptr), intent(in) :: src
        procedure(mq_config_fn), optional :: fn
        type(c_ptr), intent(in), optional :: user
        integer :: rc
        type(c_ptr) :: u
        call clear_local_error()
        u = c_null_ptr
        if (present(user)) u = user
        if (present(fn)) then
            rc = int(c_mq_source_set_config_handler(src, c_funloc(fn), u))
        else
            rc = int(c_mq_source_set_config_handler(src, c_null_funptr, c_null_ptr))
        end if
    end function mq_source_set_config_handler

    ! Runs the IntervalSource schedule, calling update every period seconds,
    ! and blocks until the source stops. See metricq.h for the statuses.
    function mq_source_run_interval(src, period, update, user) result(rc)
        type(c_ptr), intent(in) :: src
        real(real64), intent(in) :: period
        procedure(mq_update_fn) :: update
        type(c_ptr), intent(in), optional :: user
        integer :: rc
        type(c_ptr) :: u
        call clear_local_error()
        u = c_null_ptr
        if (present(user)) u = user
        rc = int(c_mq_source_run_interval(src, real(period, c_double), c_funloc(update), u))
    end function mq_source_run_interval

    function mq_source_set_period(src, period) result(rc)
        type(c_ptr), intent(in) :: src
        real(real64), intent(in) :: period
        integer :: rc
        call clear_local_error()
        rc = int(c_mq_source_set_period(src, real(period, c_double)))
    end function mq_source_set_period

    ! Counters since the source connected.
    function mq_source_stats(src, stats) result(rc)
        type(c_ptr), intent(in) :: src
        type(mq_stats), intent(out), target :: stats
        integer :: rc
        call clear_local_error()
        rc = int(c_mq_source_stats(src, c_loc(stats), int(c_sizeof(stats), c_size_t)))
    end function mq_source_stats

    ! Sends the library's log lines to fn (absent: back to stderr).
    subroutine mq_set_log_handler(fn, user)
        procedure(mq_log_fn), optional :: fn
        type(c_ptr), intent(in), optional :: user
        type(c_ptr) :: u
        u = c_null_ptr
        if (present(user)) u = user
        if (present(fn)) then
            call c_mq_set_log_handler(c_funloc(fn), u)
        else
            call c_mq_set_log_handler(c_null_funptr, c_null_ptr)
        end if
    end subroutine mq_set_log_handler

    ! MQ_LOG_DEBUG, MQ_LOG_INFO, MQ_LOG_WARN, MQ_LOG_ERROR or MQ_LOG_OFF.
    function mq_set_log_level(level) result(rc)
        integer, intent(in) :: level
        integer :: rc
        call clear_local_error()
        rc = int(c_mq_set_log_level(int(level, c_int)))
    end function mq_set_log_level

end module metricq
