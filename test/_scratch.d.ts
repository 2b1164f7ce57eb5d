import * as Effect from "effect/Effect";
import * as Context from "effect/Context";
interface Decision<R> {
    readonly handler: () => Effect.Effect<void, unknown, R>;
}
export interface Up<R = never, P = never> {
    <R2>(ctx: string, next: Effect.Effect<Decision<R2>, never, R2>): Effect.Effect<Decision<Exclude<R2, P>>, never, R | Exclude<R2, P>>;
}
declare const Db_base: Context.ServiceClass<Db, "Db", {
    q: number;
}>;
declare class Db extends Db_base {
}
declare const Principal_base: Context.ServiceClass<Principal, "Principal", {
    user: string;
}>;
declare class Principal extends Principal_base {
}
declare const plain: Up<never>;
declare const needs: Up<Db>;
declare const prov: Up<never, Principal>;
type ReqOf<M> = M extends Up<infer R, any> ? R : never;
type ProvOf<M> = M extends Up<any, infer P> ? P : never;
declare const inline: ((_c: string, next: any) => any)[];
type A = [ReqOf<typeof needs>, ProvOf<typeof prov>, ReqOf<typeof plain>, ReqOf<typeof inline[0]>, ProvOf<typeof inline[0]>];
export declare const a: A;
export { plain };
