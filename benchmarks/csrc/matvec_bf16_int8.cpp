// Batch-1 bf16 and int8 products over one token's matrices of SmolLM2-135M, AVX2, 2 OpenMP threads: four rows side by
// side with the software prefetch (the step's AVX2 kernels until 2026-12-03) against one row at a time.
//   g++ -O3 -mavx2 -mfma -fopenmp benchmarks/csrc/matvec_bf16_int8.cpp -o /tmp/matvec_bi && OMP_NUM_THREADS=2 /tmp/matvec_bi 25
#include <immintrin.h>
#include <omp.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <vector>
#include <sys/mman.h>
#include <algorithm>
static inline float hsum(__m256 v){__m128 s=_mm_add_ps(_mm256_castps256_ps128(v),_mm256_extractf128_ps(v,1));s=_mm_add_ps(s,_mm_movehl_ps(s,s));return _mm_cvtss_f32(_mm_add_ss(s,_mm_movehdup_ps(s)));}
static inline void prefetch_ahead(const void* group, long group_bytes, long it){const char*p=(const char*)group+4*group_bytes+256*it;for(int j=0;j<4;j++)_mm_prefetch(p+64*j,_MM_HINT_T0);}
struct X{ std::vector<float> even,odd; std::vector<int8_t> q,ax; std::vector<float> s; };
static void bf16_cur(const uint16_t*W,const X&xb,float*y,long r0,long r1,long in){
  const __m256i hi=_mm256_set1_epi32((int)0xFFFF0000);
  for(long r=r0;r<r1;r+=4){__m256 a[8];for(int k=0;k<8;k++)a[k]=_mm256_setzero_ps();const uint16_t*w=W+r*in;
    for(long i=0;i<in;i+=16){__m256 xe=_mm256_loadu_ps(xb.even.data()+i/2),xo=_mm256_loadu_ps(xb.odd.data()+i/2);
      if(i%32==0)prefetch_ahead(w,4*in*2,i/32);
      for(int k=0;k<4;k++){__m256i v=_mm256_loadu_si256((const __m256i*)(w+k*in+i));
        a[2*k]=_mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v,16)),xe,a[2*k]);a[2*k+1]=_mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v,hi)),xo,a[2*k+1]);}}
    for(int k=0;k<4;k++)y[r+k]=hsum(_mm256_add_ps(a[2*k],a[2*k+1]));}}
static void bf16_row1(const uint16_t*W,const X&xb,float*y,long r0,long r1,long in){
  const __m256i hi=_mm256_set1_epi32((int)0xFFFF0000);
  for(long r=r0;r<r1;r++){__m256 a0=_mm256_setzero_ps(),a1=a0,a2=a0,a3=a0;const uint16_t*w=W+r*in;
    for(long i=0;i<in;i+=32){
      __m256i v0=_mm256_loadu_si256((const __m256i*)(w+i)),v1=_mm256_loadu_si256((const __m256i*)(w+i+16));
      a0=_mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v0,16)),_mm256_loadu_ps(xb.even.data()+i/2),a0);
      a1=_mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v0,hi)),_mm256_loadu_ps(xb.odd.data()+i/2),a1);
      a2=_mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v1,16)),_mm256_loadu_ps(xb.even.data()+i/2+8),a2);
      a3=_mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v1,hi)),_mm256_loadu_ps(xb.odd.data()+i/2+8),a3);}
    y[r]=hsum(_mm256_add_ps(_mm256_add_ps(a0,a1),_mm256_add_ps(a2,a3)));}}
static void i8_cur(const int8_t*W,const float*scale,const X&q,float*y,long r0,long r1,long in){
  const __m256i ones=_mm256_set1_epi16(1);
  for(long r=r0;r<r1;r+=4){__m256 a[4]={_mm256_setzero_ps(),_mm256_setzero_ps(),_mm256_setzero_ps(),_mm256_setzero_ps()};const int8_t*w=W+r*in;
    for(long b=0;b<in/64;b++){const __m256i*qx=(const __m256i*)(q.q.data()+64*b);const __m256i*ax=(const __m256i*)(q.ax.data()+64*b);
      __m256i x0=_mm256_loadu_si256(qx),x1=_mm256_loadu_si256(qx+1),a0=_mm256_loadu_si256(ax),a1=_mm256_loadu_si256(ax+1);__m256 sx=_mm256_set1_ps(q.s[b]);
      prefetch_ahead(w,4*in,b);
      for(int k=0;k<4;k++){const __m256i*wk=(const __m256i*)(w+k*in+64*b);
        __m256i p0=_mm256_madd_epi16(_mm256_maddubs_epi16(a0,_mm256_sign_epi8(_mm256_loadu_si256(wk),x0)),ones);
        __m256i p1=_mm256_madd_epi16(_mm256_maddubs_epi16(a1,_mm256_sign_epi8(_mm256_loadu_si256(wk+1),x1)),ones);
        a[k]=_mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(p0,p1)),sx,a[k]);}}
    for(int k=0;k<4;k++)y[r+k]=hsum(a[k])*scale[r+k];}}
static void i8_row1(const int8_t*W,const float*scale,const X&q,float*y,long r0,long r1,long in){
  const __m256i ones=_mm256_set1_epi16(1);
  for(long r=r0;r<r1;r++){__m256 acc0=_mm256_setzero_ps(),acc1=acc0;const int8_t*w=W+r*in;
    for(long b=0;b<in/64;b+=1){const __m256i*qx=(const __m256i*)(q.q.data()+64*b);const __m256i*ax=(const __m256i*)(q.ax.data()+64*b);const __m256i*wk=(const __m256i*)(w+64*b);
      __m256i p0=_mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_loadu_si256(ax),_mm256_sign_epi8(_mm256_loadu_si256(wk),_mm256_loadu_si256(qx))),ones);
      __m256i p1=_mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_loadu_si256(ax+1),_mm256_sign_epi8(_mm256_loadu_si256(wk+1),_mm256_loadu_si256(qx+1))),ones);
      __m256 v=_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(p0,p1)),_mm256_set1_ps(q.s[b]));
      if(b&1)acc1=_mm256_add_ps(acc1,v);else acc0=_mm256_add_ps(acc0,v);}
    y[r]=hsum(_mm256_add_ps(acc0,acc1))*scale[r];}}
int main(int argc,char**argv){
 struct M{long o,i;}; std::vector<M> ms; for(int l=0;l<30;l++){ms.push_back({960,576});ms.push_back({576,576});ms.push_back({3072,576});ms.push_back({576,1536});} ms.push_back({49152,576});
 int rounds=atoi(argv[1]);
 for(int es: {2,1}){
 size_t tot=0; std::vector<size_t> off; for(auto&m:ms){off.push_back(tot);tot+=m.o*m.i*es;}
 size_t sz=(tot+(2<<20))/(2<<20)*(2<<20); char*B; posix_memalign((void**)&B,2<<20,sz); madvise(B,sz,MADV_HUGEPAGE);
 for(size_t i=0;i<tot;i++)B[i]=(char)(i*7%13);
 X x; x.even.assign(768,0.5f);x.odd.assign(768,0.25f);x.q.assign(1536,3);x.ax.assign(1536,3);x.s.assign(24,0.01f);
 std::vector<float> y(49152), sc(49152,1.0f);
 std::vector<double> t[2];
 for(int R=0;R<rounds;R++) for(int v=0;v<2;v++){
  auto t0=std::chrono::steady_clock::now(); int N=10;
  for(int n=0;n<N;n++) for(size_t j=0;j<ms.size();j++){ long o=ms[j].o,in=ms[j].i; const char*W=B+off[j];
   #pragma omp parallel
   { int nt=omp_get_num_threads(),tid=omp_get_thread_num(); long nb=o/4,c=(nb+nt-1)/nt,b0=tid*c,b1=std::min(nb,b0+c);
     if(b0<b1){ if(es==2){ if(v==0)bf16_cur((const uint16_t*)W,x,y.data(),4*b0,4*b1,in); else bf16_row1((const uint16_t*)W,x,y.data(),4*b0,4*b1,in);}
                else { if(v==0)i8_cur((const int8_t*)W,sc.data(),x,y.data(),4*b0,4*b1,in); else i8_row1((const int8_t*)W,sc.data(),x,y.data(),4*b0,4*b1,in);} } } }
  t[v].push_back(N/std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count());}
 for(int v=0;v<2;v++){auto a=t[v];std::sort(a.begin(),a.end());printf("%s %s median %.1f best %.1f tok/s (%.1f GB/s)\n",es==2?"bf16":"int8",v?"row1":"cur ",a[a.size()/2],a.back(),a[a.size()/2]*tot/1e9);}
 free(B);}
}
