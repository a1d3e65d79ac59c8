/*
 * berth's test pause image: a sandbox's do-nothing PID 1 for runtimes that need one
 * (containerd's sandbox_image). It sleeps until SIGTERM or SIGINT (then exits 0) and
 * reaps every child that is reparented to it. Built with `gcc -static` by imagegen so
 * the image needs no libc.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int signo) {
    (void)signo;
    _exit(0);
}

static void on_child(int signo) {
    (void)signo;
    int saved_errno = errno;
    /* Several children may exit behind one SIGCHLD: reap until none is left. */
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved_errno;
}

static int install(int signo, void (*handler)(int)) {
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = handler;
    action.sa_flags = SA_RESTART | (signo == SIGCHLD ? SA_NOCLDSTOP : 0);
    sigemptyset(&action.sa_mask);
    return sigaction(signo, &action, NULL);
}

int main(void) {
    if (install(SIGTERM, on_stop) || install(SIGINT, on_stop) || install(SIGCHLD, on_child)) {
        static const char message[] = "pause: cannot install signal handlers\n";
        (void)!write(2, message, sizeof(message) - 1);
        return 1;
    }
    for (;;) {
        pause();
    }
}
