! A simulation sending its progress to MetricQ, in Fortran: 1-D heat
! diffusion along a rod heated at one end. Each iteration runs a number of
! explicit time steps, then sends per-iteration values (the total heat and
! the hottest point) with mq_source_send and the temperature at the rod's
! middle, sampled at every time step, as one array with mq_source_send_batch.
!
!   cmake -S examples/fortran -B build-fortran -DCMAKE_PREFIX_PATH=/usr/local && cmake --build build-fortran
!   gfortran -o heat_simulation heat_simulation.f90 $(pkg-config --cflags --libs libmetricq-fortran)
!   ./heat_simulation [URL [TOKEN [ITERATIONS]]]        (default 100 iterations, 20 per second)
!
! URL defaults to $METRICQ_URL, else amqp://guest:guest@127.0.0.1:5672/.
program heat_simulation
    use metricq
    use, intrinsic :: iso_c_binding, only: c_int
    implicit none

    interface
        ! POSIX usleep, to pace the iterations like a real computation.
        function usleep(microseconds) result(rc) bind(C, name="usleep")
            import :: c_int
            integer(c_int), value :: microseconds
            integer(c_int) :: rc
        end function usleep
    end interface

    integer, parameter :: cells = 64, steps = 25
    real(real64), parameter :: alpha = 0.4_real64   ! diffusion number, stable below 0.5
    character(len=*), parameter :: prefix = "example.fortran.heat"

    character(len=512) :: url, token, arg
    integer :: iterations, it, step, rc, n
    type(c_ptr) :: src
    real(real64) :: u(cells), unew(cells)
    integer(int64) :: times(steps), now, last
    real(real64) :: probe(steps)

    ! Arguments: URL, token, iterations.
    call get_environment_variable("METRICQ_URL", url, length=n)
    if (n == 0) url = "amqp://guest:guest@127.0.0.1:5672/"
    if (command_argument_count() >= 1) call get_command_argument(1, url)
    token = "source-fortran-heat"
    if (command_argument_count() >= 2) call get_command_argument(2, token)
    iterations = 100
    if (command_argument_count() >= 3) then
        call get_command_argument(3, arg)
        read (arg, *) iterations
    end if

    src = mq_source_new(url, token)
    if (.not. c_associated(src)) then
        write (*, '(a,a)') "connect: ", mq_last_error()
        error stop 1
    end if
    call check(mq_source_declare_many(src, '{"'//prefix//'.total": {"unit": "J", "description": "heat in the rod"}, "' &
                                      //prefix//'.max": {"unit": "K", "description": "hottest cell"}}'), "declare")
    call check(mq_source_declare(src, prefix//".probe", '{"unit": "K", "description": "middle of the rod, every step"}'), &
               "declare probe")
    ! One chunk per iteration: each batch goes out as one message.
    call check(mq_source_set_chunk_size(src, prefix//".probe", steps), "set_chunk_size")

    u = 0.0_real64
    last = 0
    do it = 1, iterations
        do step = 1, steps
            u(1) = 100.0_real64                       ! the heated end
            unew(2:cells - 1) = u(2:cells - 1) + alpha * (u(1:cells - 2) - 2 * u(2:cells - 1) + u(3:cells))
            unew(1) = u(1)
            unew(cells) = unew(cells - 1)             ! insulated end
            u = unew
            ! Timestamps must increase strictly, also within a fast loop.
            now = max(mq_now(), last + 1)
            last = now
            times(step) = now
            probe(step) = u(cells / 2)
        end do
        call check(mq_source_send(src, prefix//".total", last, sum(u)), "send total")
        call check(mq_source_send(src, prefix//".max", last, maxval(u(2:))), "send max")
        call check(mq_source_send_batch(src, prefix//".probe", times, probe), "send_batch probe")
        if (mod(it, 20) == 0) write (*, '(a,i0,a,f8.3,a)') "iteration ", it, ": middle at ", u(cells / 2), " K"
        rc = usleep(50000_c_int)
    end do

    ! Publishes what is still buffered, then disconnects.
    call check(mq_source_stop(src), "stop")
    call mq_source_free(src)
    write (*, '(a,i0,a)') "sent ", iterations * (steps + 2), " points"

    ! For `make demo`: the points sent per metric, compared with what arrived.
    call get_environment_variable("METRICQ_DEMO_REPORT", arg, length=n)
    if (n > 0) then
        open (newunit=n, file=trim(arg), status="replace", action="write")
        write (n, '(a,1x,i0)') prefix//".total", iterations
        write (n, '(a,1x,i0)') prefix//".max", iterations
        write (n, '(a,1x,i0)') prefix//".probe", iterations * steps
        close (n)
    end if

contains

    subroutine check(status, what)
        integer, intent(in) :: status
        character(len=*), intent(in) :: what
        if (status /= MQ_OK) then
            write (*, '(a,a,a,a,a)') what, ": ", mq_strerror(status), ": ", mq_last_error()
            call mq_source_free(src)
            error stop 1
        end if
    end subroutine check

end program heat_simulation
