%% ring.erl: the Erlang/OTP reference for bench/bench_runtime.c, the same
%% scenarios with the same sizes, so that bench/README.md compares like with like.
%%
%%   erlc -o DIR bench/ring.erl
%%   erl -noshell +S 2 +P 4000000 -pa DIR -run ring main [quick] [REPEAT] -s init stop
%%
%% (REPEAT: runs of each timed scenario, default 3; the best is reported.)
%%
%% Scenarios, in this order (schedulers set with
%% erlang:system_flag(schedulers_online, N)):
%%   idle   1,000,000 processes waiting in receive: erlang:memory(total) growth
%%          and RSS growth (from /proc/PID/statm) per process
%%   spawn  5,000,000 spawn+exit (fun() -> ok end) from one driver per
%%          scheduler, on 1 and on 2 schedulers
%%   ring   1,000 processes pass one token 10,000,000 hops on 1 scheduler
%%          (the token is a bare integer, Erlang's cheapest message)
%%   m2m    1,000 processes, 8 tokens each, every hop to a random peer,
%%          20,000,000 messages, on 2 and on 1 schedulers
%% Prints a human summary, then one JSON object as the last line.
-module(ring).
-export([main/0, main/1, idle_proc/0]).

main() -> main([]).

main(Args) ->
    Div = case lists:member("quick", Args) of true -> 10; false -> 1 end,
    Repeat = case [list_to_integer(A) || A <- Args, A =/= "quick"] of
                 [R | _] when R >= 1 -> R;
                 _ -> 3
             end,
    Online0 = erlang:system_info(schedulers_online),
    io:format("Erlang/OTP ~s reference~s: ~p schedulers, best of ~p runs~n",
              [erlang:system_info(otp_release), case Div of 1 -> ""; _ -> " (quick)" end,
               Online0, Repeat]),

    IdleN = 1000000 div Div,
    set_schedulers(2),
    {IdleMem, IdleRss} = idle(IdleN),
    io:format("  idle: ~p processes, ~.1f bytes/process (erlang:memory), "
              "~.1f bytes/process (RSS)~n", [IdleN, IdleMem, IdleRss]),

    SpawnN = 5000000 div Div,
    Se1 = runs(Repeat, fun() -> set_schedulers(1), spawn_exit(SpawnN, 1) end),
    Se2 = runs(Repeat, fun() -> set_schedulers(2), spawn_exit(SpawnN, 2) end),
    show(io_lib:format("spawn+exit, ~p processes, 1 scheduler", [SpawnN]), Se1),
    show(io_lib:format("spawn+exit, ~p processes, 2 schedulers", [SpawnN]), Se2),

    RingHops = 10000000 div Div,
    Ring = runs(Repeat, fun() -> set_schedulers(1), ring(1000, RingHops) end),
    show(io_lib:format("ring, 1000 processes, ~p hops, 1 scheduler", [RingHops]), Ring),

    M2mTotal = 20000000 div Div,
    Delivered = (M2mTotal div 8000) * 8000 + 1000,
    M2 = runs(Repeat, fun() -> set_schedulers(2), m2m(1000, 8, M2mTotal) end),
    M1 = runs(Repeat, fun() -> set_schedulers(1), m2m(1000, 8, M2mTotal) end),
    set_schedulers(Online0),
    show(io_lib:format("many-to-many, 1000 x 8 tokens, ~pM msgs, 2 scheds",
                       [Delivered div 1000000]), M2),
    show(io_lib:format("many-to-many, 1000 x 8 tokens, ~pM msgs, 1 sched",
                       [Delivered div 1000000]), M1),

    io:format("{\"bench\":\"runtime_erlang\",\"otp\":\"~s\",\"quick\":~s,\"repeat\":~p,"
              "\"ring_hops\":~p,\"local_msgs_per_s\":~p,"
              "\"idle_processes\":~p,\"bytes_per_idle_process\":~.1f,"
              "\"bytes_per_idle_process_rss\":~.1f,"
              "\"spawn_exit_n\":~p,\"spawn_exit_per_s\":~p,"
              "\"spawn_exit_per_s_1_scheduler\":~p,\"spawn_exit_per_s_2_schedulers\":~p,"
              "\"m2m_messages\":~p,\"msgs_per_s_2_schedulers\":~p,"
              "\"msgs_per_s_1_scheduler_m2m\":~p}~n",
              [erlang:system_info(otp_release), Div =/= 1, Repeat, RingHops, top(Ring),
               IdleN, float(IdleMem), float(IdleRss),
               SpawnN, max(top(Se1), top(Se2)), top(Se1), top(Se2),
               Delivered, top(M2), top(M1)]).

%% Runs F N times; returns every result (the best is reported: other work on
%% the machine only ever slows a run down).
runs(N, F) -> [F() || _ <- lists:seq(1, N)].

top(Runs) -> round(lists:max(Runs)).

show(Label, Runs) ->
    io:format("  ~-50s ~7.2f M/s   runs:~s~n",
              [lists:flatten(Label), lists:max(Runs) / 1.0e6,
               [io_lib:format(" ~.2f", [R / 1.0e6]) || R <- Runs]]).

set_schedulers(N) ->
    erlang:system_flag(schedulers_online, N),
    garbage_collect(),
    timer:sleep(50).

now_ns() -> erlang:monotonic_time(nanosecond).

%% ------------------------------------------------------------------ ring

ring(N, Hops) ->
    Self = self(),
    Pids = [spawn(fun() -> member(Self) end) || _ <- lists:seq(1, N)],
    [First | _] = Pids,
    lists:foreach(fun({P, Next}) -> P ! {next, Next} end,
                  lists:zip(Pids, tl(Pids) ++ [First])),
    timer:sleep(50),
    T0 = now_ns(),
    First ! Hops - 1,                 % this send is the first of Hops deliveries
    receive ring_done -> ok end,
    T1 = now_ns(),
    [P ! stop || P <- Pids],
    Hops / ((T1 - T0) / 1.0e9).

member(Main) ->
    receive {next, Next} -> member_loop(Main, Next) end.

member_loop(Main, Next) ->
    receive
        0 -> Main ! ring_done, member_loop(Main, Next);
        N when is_integer(N) -> Next ! N - 1, member_loop(Main, Next);
        stop -> ok
    end.

%% ------------------------------------------------------------------ idle

rss_bytes() ->
    Statm = os:cmd("cat /proc/" ++ os:getpid() ++ "/statm"),
    [_Size, Resident | _] = string:tokens(Statm, " \n"),
    list_to_integer(Resident) * 4096.

idle(N) ->
    garbage_collect(),
    timer:sleep(100),
    Base = erlang:system_info(process_count),
    Mem0 = erlang:memory(total),
    Rss0 = rss_bytes(),
    spawn_idle(N),                    % keeps no list of pids: nothing else grows
    timer:sleep(100),                 % every process reached its receive
    Mem1 = erlang:memory(total),
    Rss1 = rss_bytes(),
    [P ! stop || P <- erlang:processes(),
                 process_info(P, current_function) =:= {current_function, {ring, idle_proc, 0}}],
    wait_back_to(Base),
    {(Mem1 - Mem0) / N, (Rss1 - Rss0) / N}.

spawn_idle(0) -> ok;
spawn_idle(N) ->
    spawn(ring, idle_proc, []),
    spawn_idle(N - 1).

idle_proc() ->
    receive stop -> ok end.

%% ------------------------------------------------------------------ spawn+exit

spawn_exit(N, Drivers) ->
    Base = erlang:system_info(process_count),
    Self = self(),
    T0 = now_ns(),
    [spawn(fun() -> spawn_loop(N div Drivers), Self ! driver_done end)
     || _ <- lists:seq(1, Drivers)],
    [receive driver_done -> ok end || _ <- lists:seq(1, Drivers)],
    wait_back_to(Base),
    T1 = now_ns(),
    (N div Drivers) * Drivers / ((T1 - T0) / 1.0e9).

spawn_loop(0) -> ok;
spawn_loop(N) ->
    spawn(fun() -> ok end),
    spawn_loop(N - 1).

wait_back_to(Base) ->
    case erlang:system_info(process_count) =< Base of
        true -> ok;
        false -> timer:sleep(1), wait_back_to(Base)
    end.

%% ------------------------------------------------------------------ many-to-many

m2m(NProcs, Tokens, Total) ->
    Hops = Total div (NProcs * Tokens) - 1,   % each token is delivered Hops + 1 times
    Self = self(),
    Pids = [spawn(fun() -> m2m_init(Self, I, NProcs, Tokens, Hops) end)
            || I <- lists:seq(0, NProcs - 1)],
    persistent_term:put(bench_m2m_peers, list_to_tuple(Pids)),
    [P ! peers_ready || P <- Pids],
    timer:sleep(50),
    T0 = now_ns(),
    [P ! start || P <- Pids],
    [receive token_done -> ok end || _ <- lists:seq(1, NProcs * Tokens)],
    T1 = now_ns(),
    [P ! {report, Self} || P <- Pids],
    Delivered = lists:sum([receive {count, C} -> C end || _ <- Pids]),
    persistent_term:erase(bench_m2m_peers),
    Expected = NProcs + NProcs * Tokens * (Hops + 1),
    Delivered =:= Expected orelse exit({m2m_delivered, Delivered, Expected}),
    Delivered / ((T1 - T0) / 1.0e9).

m2m_init(Main, I, NProcs, Tokens, Hops) ->
    receive peers_ready -> ok end,
    Peers = persistent_term:get(bench_m2m_peers),
    m2m_loop(Main, I, NProcs, Tokens, Hops, Peers, (I * 7919 + 1) band 16#FFFFFF, 0).

%% A 24-bit LCG keeps every intermediate a small integer.
next_rng(X) -> (X * 1140671485 + 12820163) band 16#FFFFFF.

pick(I, NProcs, X) ->
    case (X bsr 4) rem NProcs of
        I -> (I + 1) rem NProcs;
        J -> J
    end.

m2m_loop(Main, I, NProcs, Tokens, Hops, Peers, X, Count) ->
    receive
        0 ->
            Main ! token_done,
            m2m_loop(Main, I, NProcs, Tokens, Hops, Peers, X, Count + 1);
        N when is_integer(N) ->
            X1 = next_rng(X),
            element(pick(I, NProcs, X1) + 1, Peers) ! N - 1,
            m2m_loop(Main, I, NProcs, Tokens, Hops, Peers, X1, Count + 1);
        start ->
            X1 = burst(Tokens, I, NProcs, Hops, Peers, X),
            m2m_loop(Main, I, NProcs, Tokens, Hops, Peers, X1, Count + 1);
        {report, From} ->
            From ! {count, Count}
    end.

burst(0, _I, _NProcs, _Hops, _Peers, X) -> X;
burst(K, I, NProcs, Hops, Peers, X) ->
    X1 = next_rng(X),
    element(pick(I, NProcs, X1) + 1, Peers) ! Hops,
    burst(K - 1, I, NProcs, Hops, Peers, X1).
